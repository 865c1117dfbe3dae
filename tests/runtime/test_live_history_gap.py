"""A backend that may have skipped events tells every live stream, in order (``Hub.history_gap``)."""

from __future__ import annotations

from contextlib import AsyncExitStack

import orjson

from trio_sse.core.parser import ParsedEvent
from trio_sse.runtime.connection import CONTROL_RESERVE, LiveReset

from .support import open_test_hub

TIMEOUT = 300


def kinds(events: list[ParsedEvent]) -> list[str]:
    return [e.id if e.id else e.type for e in events]


async def test_history_gap_puts_one_stream_reset_between_the_events_before_and_after_it(
    autojump_clock, client_factory
) -> None:
    async with client_factory() as (hub, client), AsyncExitStack() as stack:
        everything = await stack.enter_async_context(client.stream())
        risks_only = await stack.enter_async_context(client.stream(types="risk_alert"))
        for stream in (everything, risks_only):
            assert (await stream.next_event(timeout=TIMEOUT)).type == "connected"
        before = [await hub.publish("commit", n) for n in range(3)]
        # Published, still in the outbox: the reset must not overtake them.
        hub.history_gap(before[-1])
        after = [await hub.publish("commit", n) for n in range(3, 5)]
        got = await everything.events(6, timeout=TIMEOUT)
        assert kinds(got) == [*before, "stream_reset", *after]
        assert orjson.loads(got[3].data) == {"reason": "history_gap", "last_event_id": before[-1]}
        # A stream whose filters matched none of the events is told too: what was
        # skipped is unknown, so it may have been of its types.
        reset = await risks_only.next_event(timeout=TIMEOUT)
        assert reset.type == "stream_reset" and reset.id is None
        assert orjson.loads(reset.data) == {"reason": "history_gap", "last_event_id": before[-1]}
        await risks_only.assert_no_event_within(1)


async def test_a_stream_with_no_control_slot_left_is_closed_rather_than_left_unaware(autojump_clock) -> None:
    async with open_test_hub() as hub, hub.connect(hub.subscription(None, None)) as connection:
        # Its task is not running: the control slots fill up (eight filter changes pending).
        for _ in range(CONTROL_RESERVE):
            assert connection.push_control(LiveReset(b""))
        hub.history_gap("1-0")
        # It reconnects with its last id and gets a replay or a reset then.
        assert connection.close_reason == "history_gap"

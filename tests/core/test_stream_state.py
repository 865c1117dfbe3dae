"""The stream's state machine on its own: no trio, no transport, no clock.

Every transition of the table, the rules at its edges (first reason wins, a write cut
short never finishes cleanly, an ending stream takes nothing), queue accounting and
de-duplication by event order; then every unusual end of
``tests/runtime/test_unusual_ends.py`` replayed as the sequence of events its driver
reports; then random sequences (hypothesis) that never reach an illegal state.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from trio_sse.core.events import Event, format_event_id, make_event
from trio_sse.core.stream_state import (
    BACKLOG,
    CONTROL_RESERVE,
    TRANSITIONS,
    UNCLEAN_REASONS,
    CloseReason,
    StreamMachine,
    StreamState,
    StreamStateError,
)

P, W, I, B, E, C = StreamState  # noqa: E741 - in the order they are declared


def event(ms: int) -> Event:
    return make_event((ms, 0), "commit", b"{}", None, 0.0)


def events(*ms: int) -> list[Event]:
    return [event(m) for m in ms]


class Queue(deque[Any]):
    def send_nowait(self, item: Any) -> None:
        self.append(item)


class Stream(StreamMachine):
    """The machine with a recording direct writer; ``short`` makes the next direct write leave a backlog."""

    __slots__ = ("direct_writes", "queue", "short")

    def __init__(self, queue_size: int = 4, last_event_id: str | None = None) -> None:
        self.queue = Queue()
        super().__init__(queue_size, self.queue, last_event_id=last_event_id)
        self.direct_writes: list[list[Event]] = []
        self.short = False

    def _write_direct(self, events: list[Event], payload: bytes, now: float) -> None:
        assert payload == b"".join(e.wire for e in events)
        self.direct_writes.append(events)
        self.sent(events, now)
        if self.short:
            self.backlogged()


def stream_in(state: StreamState, **kwargs: Any) -> Stream:
    """A stream brought to ``state`` by the driver's own sequence of events."""
    stream = Stream(**kwargs)
    if state is P:
        return stream
    stream.preamble_written()
    if state is I:
        assert stream.idle()
    elif state is B:
        stream.idle()
        stream.short = True
        stream.take(events(1), event(1).wire, 1.0)
        stream.short = False
    elif state is E:
        stream.end_requested("server_shutdown")
    elif state is C:
        stream.close_requested("client_closed")
    assert stream.state is state
    return stream


#: event name -> how the driver reports it
EVENTS = {
    "preamble_written": lambda s: s.preamble_written(),
    "idle": lambda s: s.idle(),
    "woke": lambda s: s.woke(),
    "control": lambda s: s.push_control("change"),
    "backlogged": lambda s: s.backlogged(),
    "drained": lambda s: s.drained(),
    "end": lambda s: s.end_requested("server_shutdown"),
    "close": lambda s: s.close_requested("slow_consumer"),
    "finished": lambda s: s.finished(),
}


# -- the table, pair by pair ----------------------------------------------------------------


@pytest.mark.parametrize(("state", "name"), sorted(TRANSITIONS, key=str), ids=lambda v: getattr(v, "name", v))
def test_every_transition_of_the_table_leads_where_the_table_says(state: StreamState, name: str) -> None:
    stream = stream_in(state)
    EVENTS[name](stream)
    assert stream.state is TRANSITIONS[state, name]


ILLEGAL = [(s, n) for s in StreamState for n in EVENTS if (s, n) not in TRANSITIONS and n != "control"]


@pytest.mark.parametrize(("state", "name"), ILLEGAL, ids=lambda v: getattr(v, "name", v))
def test_an_event_the_state_cannot_have_raises_and_changes_nothing(state: StreamState, name: str) -> None:
    stream = stream_in(state)
    with pytest.raises(StreamStateError):
        EVENTS[name](stream)
    assert stream.state is state


def test_the_table_covers_every_state_with_close_and_finished() -> None:
    for state in StreamState:
        assert TRANSITIONS[state, "close"] is C
        assert TRANSITIONS[state, "finished"] is C
    assert {target for (source, _), target in TRANSITIONS.items() if source is C} == {C}  # CLOSED absorbs
    assert {target for (source, _), target in TRANSITIONS.items() if source is E} <= {E, C}  # no way back


def test_idle_only_with_nothing_queued() -> None:
    stream = stream_in(W)
    stream.take(events(1), event(1).wire, 0.0)
    assert not stream.idle() and stream.state is W  # the task writes what is queued first
    stream.collect(stream.queue.popleft(), [])
    assert stream.idle() and stream.state is I and stream.direct_ready


def test_idle_while_a_write_is_under_way_is_a_driver_bug() -> None:
    stream = stream_in(W)
    stream.sending = True
    with pytest.raises(StreamStateError):
        stream.idle()
    assert stream.state is W


def test_a_control_message_closes_the_direct_path_so_later_events_follow_it() -> None:
    stream = stream_in(I)
    assert stream.push_control("change")
    assert stream.state is W and not stream.direct_ready
    assert stream.take(events(1), event(1).wire, 0.0) == 0
    assert list(stream.queue) == ["change", events(1)]  # in order, nothing written directly
    assert stream.direct_writes == []


def test_control_messages_have_their_own_reserve() -> None:
    stream = stream_in(W, queue_size=1)
    assert [stream.push_control(n) for n in range(CONTROL_RESERVE + 1)] == [True] * CONTROL_RESERVE + [False]
    assert stream.pending_controls == CONTROL_RESERVE
    assert stream.take(events(1), event(1).wire, 0.0) == 0  # events have their own slots
    stream.control_taken()
    assert stream.push_control("again")


@pytest.mark.parametrize("state", [E, C])
def test_an_ending_or_closed_stream_takes_no_control_message(state: StreamState) -> None:
    stream = stream_in(state)
    assert not stream.push_control("change")
    assert stream.pending_controls == 0 and not stream.queue


# -- reasons and the clean finish -------------------------------------------------------------


def test_close_reasons_are_the_strings_stats_count() -> None:
    assert {r.value for r in CloseReason} == {
        "client_closed",
        "send_timeout",
        "slow_consumer",
        "server_shutdown",
        "memory_pressure",
        "token_expired",
        "backend_unavailable",
        "history_gap",
    }
    stream = stream_in(W)
    stream.close_requested("memory_pressure")
    assert type(stream.close_reason) is str and stream.close_reason == "memory_pressure"  # orjson needs plain str keys


@pytest.mark.parametrize("reason", list(CloseReason))
def test_only_a_reason_where_the_client_was_reading_may_finish(reason: CloseReason) -> None:
    stream = stream_in(W)
    stream.close_requested(reason)
    assert stream.can_finish == (reason not in UNCLEAN_REASONS)


def test_an_unknown_reason_is_refused() -> None:
    with pytest.raises(ValueError):
        stream_in(W).close_requested("bored")


@pytest.mark.parametrize(
    ("calls", "reason"),
    [
        ([("close", "slow_consumer"), ("end", "server_shutdown"), ("close", "memory_pressure")], "slow_consumer"),
        ([("end", "server_shutdown"), ("close", "send_timeout"), ("close", "client_closed")], "server_shutdown"),
        ([("close", "client_closed"), ("close", "slow_consumer"), ("end", "server_shutdown")], "client_closed"),
    ],
    ids=["close-first", "end-first", "client-first"],
)
def test_several_ends_at_once_the_first_reason_wins(calls: list[tuple[str, str]], reason: str) -> None:
    stream = stream_in(W)
    for call, why in calls:
        (stream.close_requested if call == "close" else stream.end_requested)(why)
        stream.close_requested(reason)  # repeating the winner changes nothing either
    stream.finished()
    assert stream.state is C and stream.close_reason == reason


def test_closing_while_a_write_is_under_way_asks_for_an_abort_and_never_finishes_cleanly() -> None:
    stream = stream_in(E)  # a graceful end, then forced at shutdown_grace
    stream.sending = True
    assert stream.close_requested("server_shutdown") is True
    assert stream.write_failed and not stream.can_finish
    assert stream.close_reason == "server_shutdown"


def test_closing_between_writes_asks_for_no_abort() -> None:
    stream = stream_in(W)
    assert stream.close_requested("memory_pressure") is False
    assert stream.can_finish


def test_send_failed_is_for_good_like_h11s() -> None:
    stream = stream_in(W)
    stream.send_failed()
    stream.end_requested("server_shutdown")
    stream.finished()
    assert stream.close_reason == "server_shutdown" and not stream.can_finish


def test_finished_without_a_reason_was_cut_by_the_servers_own_shutdown() -> None:
    stream = stream_in(W)
    stream.finished()
    assert stream.state is C and stream.close_reason == "server_shutdown" and stream.can_finish


# -- queue accounting and de-duplication ----------------------------------------------------


def test_direct_writes_in_idle_are_accounted_and_leave_nothing_queued() -> None:
    stream = stream_in(I)
    assert stream.take(events(5, 6), event(5).wire + event(6).wire, 7.0) == 0
    assert stream.direct_writes == [events(5, 6)]
    assert (stream.events_sent, stream.last_event_id) == (2, "6-0")
    assert (stream.first_order, stream.last_order) == ((5, 0), (6, 0))
    assert stream.last_write == 7.0 and stream.pending == 0 and not stream.queue


def test_a_short_direct_write_queues_the_backlog_marker_then_events_behind_it() -> None:
    stream = stream_in(I)
    stream.short = True
    stream.take(events(1), event(1).wire, 0.0)
    assert stream.state is B and list(stream.queue) == [BACKLOG]
    stream.take(events(2), event(2).wire, 0.0)
    assert list(stream.queue) == [BACKLOG, events(2)] and stream.pending == 1
    stream.woke()
    assert stream.state is B  # the task must drain before anything else
    stream.queue.popleft()
    stream.drained()
    assert stream.state is W


def test_a_round_that_only_partly_fits_queues_what_fits_and_reports_the_rest() -> None:
    stream = stream_in(W, queue_size=3)
    assert stream.take(events(1, 2, 3, 4, 5), b"".join(e.wire for e in events(1, 2, 3, 4, 5)), 0.0) == 2
    assert list(stream.queue) == [events(1, 2, 3)] and stream.pending == 3
    assert stream.take(events(6), event(6).wire, 0.0) == 1  # full: nothing fits
    assert stream.pending == 3


def test_a_queue_exactly_full_refuses_nothing() -> None:
    stream = stream_in(W, queue_size=3)
    assert [stream.take(events(n), event(n).wire, 0.0) for n in (1, 2, 3)] == [0, 0, 0]
    assert stream.pending == 3 and stream.reason is None


@pytest.mark.parametrize("state", [E, C])
def test_take_leaves_ending_and_closed_to_the_hub_and_never_writes_directly(state: StreamState) -> None:
    """The per-round call checks no more than ``IDLE`` (the hub stops offering ending
    streams); what it queues for a stream that is over is never written."""
    stream = stream_in(state, queue_size=3)
    assert stream.take(events(1, 2), event(1).wire + event(2).wire, 0.0) == 0
    assert stream.direct_writes == [] and stream.state is state and stream.reason is not None


def test_events_at_or_before_the_registration_point_are_not_taken() -> None:
    stream = stream_in(I)
    stream.start_after((5, 0))
    assert stream.take(events(4, 5), b"", 0.0) == 0
    assert stream.direct_writes == []
    stream.take(events(5, 6), event(5).wire + event(6).wire, 0.0)
    assert stream.direct_writes == [events(6)]  # the payload is rebuilt for the rest


def test_collect_skips_what_a_replay_already_wrote_and_counts_the_queue_down() -> None:
    stream = stream_in(P)
    stream.take(events(3, 4, 5), b"", 0.0)  # live events during the replay
    stream.replayed(stream.replay_floor(format_event_id((4, 0))))
    batch: list[Event] = []
    size = stream.collect(stream.queue.popleft(), batch)
    assert batch == events(5) and size == len(event(5).wire) and stream.pending == 0


def test_replay_floor_is_the_clients_own_id_when_the_replay_is_empty() -> None:
    stream = stream_in(P)
    assert stream.replay_floor("7-0") == (7, 0)
    assert stream.replay_floor("not-an-order") == (-1, -1)
    stream.replayed((2, 0))
    assert stream.last_order == (2, 0)
    stream.replayed((1, 0))
    assert stream.last_order == (2, 0)  # never backwards


def test_a_resubscribe_replay_skips_only_what_the_previous_filters_delivered() -> None:
    stream = stream_in(W)
    stream.sent(events(3, 4, 5), 0.0)
    already = stream.already_sent(lambda e: e.order != (4, 0))
    assert [already(e) for e in events(2, 3, 4, 5, 6)] == [False, True, False, True, False]
    assert not Stream().already_sent(lambda e: True)(event(1))  # nothing delivered yet


def test_a_stream_without_a_queue_refuses_events_loudly() -> None:
    machine = StreamMachine()
    machine.preamble_written()
    assert machine.take(events(1), b"", 0.0) == 1  # no room at all
    with pytest.raises(StreamStateError):
        machine.push_control("change")
    machine.idle()
    with pytest.raises(NotImplementedError):
        machine.take(events(2), b"", 0.0)


# -- the unusual ends of tests/runtime/test_unusual_ends.py, as the driver reports them -------


def test_client_leaving_in_the_middle_of_a_long_replay() -> None:
    stream = stream_in(P)
    stream.sending = True  # a replay write is blocked (shielded or not: close aborts it)
    stream.take(events(9), b"", 0.0)  # live, committed during the replay
    assert stream.pending == 1
    assert stream.close_requested(CloseReason.CLIENT_CLOSED)  # the watchdog: abort it
    stream.sending = False
    stream.finished(CloseReason.CLIENT_CLOSED)  # the write raised
    assert stream.close_reason == "client_closed" and not stream.can_finish


def test_graceful_shutdown_in_the_middle_of_a_long_replay() -> None:
    stream = stream_in(P)
    stream.sending = True
    stream.end_requested(CloseReason.SERVER_SHUTDOWN)
    assert stream.state is E
    stream.sending = False  # the write under way completes; the replay loop sees ENDING
    stream.preamble_written()
    assert stream.state is E
    stream.finished()
    assert stream.close_reason == "server_shutdown" and stream.can_finish


def test_hub_closed_while_a_replay_write_is_stuck() -> None:
    stream = stream_in(P)
    stream.sending = True
    stream.end_requested(CloseReason.SERVER_SHUTDOWN)
    assert stream.close_requested(CloseReason.SERVER_SHUTDOWN)  # forced at shutdown_grace: abort
    stream.finished()
    assert stream.close_reason == "server_shutdown" and not stream.can_finish


def test_shutdown_during_a_subscribe_replay_refuses_further_changes() -> None:
    stream = stream_in(I)
    assert stream.push_control("add commit")
    stream.woke()
    stream.control_taken()
    stream.end_requested(CloseReason.SERVER_SHUTDOWN)  # during its replay
    assert not stream.push_control("add risk_alert")
    stream.finished()
    assert stream.close_reason == "server_shutdown" and stream.can_finish


@pytest.mark.parametrize("shielded", [False, True])
def test_token_expiring_while_a_write_is_stuck(shielded: bool) -> None:
    stream = stream_in(W)
    stream.sending = True
    if shielded:  # the expiry cannot stop it: the watchdog aborts it at send_timeout
        assert stream.close_requested(CloseReason.SEND_TIMEOUT)
        stream.sending = False
        stream.finished(CloseReason.CLIENT_CLOSED)  # the aborted write raised
        assert stream.close_reason == "send_timeout" and not stream.can_finish
    else:  # cancelled at the token's end
        stream.sending = False
        stream.finished(CloseReason.TOKEN_EXPIRED)
        assert stream.close_reason == "token_expired" and stream.can_finish


def test_write_in_progress_at_token_expiry_completes_and_ends_cleanly() -> None:
    stream = stream_in(W)
    stream.sending = True
    stream.sending = False  # completed after the expiry
    stream.sent(events(1), 12.0)
    stream.finished(CloseReason.TOKEN_EXPIRED)
    assert stream.close_reason == "token_expired" and stream.can_finish


def test_token_expiring_during_a_direct_backlog_drain() -> None:
    stream = stream_in(B)
    stream.woke()  # the task takes the BACKLOG marker and drains; the expiry cancels that
    stream.finished(CloseReason.TOKEN_EXPIRED)
    stream.send_failed()  # the driver sees a backlog left
    assert stream.close_reason == "token_expired" and not stream.can_finish


def test_send_timeout_with_the_queue_exactly_full() -> None:
    stream = stream_in(W, queue_size=3)
    stream.sending = True
    assert [stream.take(events(n), b"", 0.0) for n in (1, 2, 3)] == [0, 0, 0]
    assert stream.reason is None
    assert stream.close_requested(CloseReason.SEND_TIMEOUT)
    stream.finished()
    assert stream.close_reason == "send_timeout" and not stream.can_finish


def test_client_leaving_behind_a_direct_backlog() -> None:
    stream = stream_in(I)
    stream.take(events(1), event(1).wire, 0.0)
    stream.short = True
    stream.take(events(2), event(2).wire, 0.0)
    stream.take(events(3), event(3).wire, 0.0)
    assert stream.state is B and stream.pending == 1
    assert [e.order[0] for batch in stream.direct_writes for e in batch] == [1, 2]
    assert not stream.close_requested(CloseReason.CLIENT_CLOSED)  # a drain is ours: cancelled, not aborted
    stream.send_failed()
    stream.finished()
    assert stream.close_reason == "client_closed" and not stream.can_finish


def test_stream_ended_between_registration_and_its_start() -> None:
    stream = stream_in(P)
    stream.end_requested(CloseReason.SERVER_SHUTDOWN)
    stream.finished()  # the driver never ran the body
    assert stream.close_reason == "server_shutdown" and stream.can_finish and stream.events_sent == 0


def test_transport_failing_on_its_very_first_write() -> None:
    stream = stream_in(P)
    stream.finished(CloseReason.CLIENT_CLOSED)
    assert stream.close_reason == "client_closed" and not stream.can_finish


@pytest.mark.parametrize("overflow", ["drop", "disconnect"])
def test_a_round_that_only_partly_fits_the_queue_then_the_policy(overflow: str) -> None:
    stream = stream_in(W, queue_size=3)
    stream.sending = True
    stream.take(events(1), b"", 0.0)
    assert stream.take(events(2, 3, 4, 5, 6), b"", 0.0) == 3
    if overflow == "disconnect":
        assert stream.close_requested(CloseReason.SLOW_CONSUMER)
        assert not stream.can_finish
    else:
        stream.sending = False
        batch: list[Event] = []
        while stream.queue:
            stream.collect(stream.queue.popleft(), batch)
        assert [e.order[0] for e in batch] == [1, 2, 3] and stream.pending == 0


def test_a_graceful_end_lets_the_write_under_way_complete_and_finish_cleanly() -> None:
    stream = stream_in(W, queue_size=3)
    stream.sending = True
    stream.end_requested(CloseReason.SERVER_SHUTDOWN)  # the hub also takes it out of its index
    assert stream.state is E and not stream.write_failed
    stream.sending = False
    stream.sent(events(1), 1.0)
    stream.finished()
    assert stream.close_reason == "server_shutdown" and stream.can_finish


# -- random sequences -----------------------------------------------------------------------


class RandomDriver(RuleBasedStateMachine):
    """Whatever the driver, the hub and the flusher report, in any order: either the
    machine refuses it (StreamStateError, nothing changed) or every invariant holds."""

    def __init__(self) -> None:
        super().__init__()
        self.stream = Stream(queue_size=3)
        self.reason: str | None = None
        self.written: list[tuple[int, int]] = []  # orders written by the flusher or the task, in order
        self.ended = False

    def _report(self, name: str, action: Any) -> Any:
        before = (self.stream.state, self.stream.reason, self.stream.pending, self.stream.pending_controls)
        try:
            return action()
        except StreamStateError:
            after = (self.stream.state, self.stream.reason, self.stream.pending, self.stream.pending_controls)
            assert after == before, f"{name} raised but changed the stream"
            if name in ("preamble_written", "woke", "backlogged", "drained", "end", "close", "finished"):
                assert (before[0], name) not in TRANSITIONS
            return None

    @rule(name=st.sampled_from(["preamble_written", "idle", "woke", "drained", "control_taken"]))
    def task_progress(self, name: str) -> None:
        if name == "control_taken":
            if self.stream.pending_controls and "change" in self.stream.queue:
                self.stream.queue.remove("change")
                self.stream.control_taken()
            return
        self._report(name, getattr(self.stream, name))

    @rule(start=st.integers(0, 30), count=st.integers(1, 4), short=st.booleans())
    def flusher_round(self, start: int, count: int, short: bool) -> None:
        stream = self.stream
        stream.short = short
        batch = events(*range(start, start + count))
        before = len(stream.direct_writes)
        missed = stream.take(batch, b"".join(e.wire for e in batch), 0.0)
        assert 0 <= missed <= count
        for written in stream.direct_writes[before:]:
            self.written.extend(e.order for e in written)
        stream.short = False

    @rule()
    def task_collects(self) -> None:
        queue = self.stream.queue
        if queue and type(queue[0]) is list:
            batch: list[Event] = []
            self.stream.collect(queue.popleft(), batch)
            self.written.extend(e.order for e in batch)

    @rule()
    def control(self) -> None:
        self._report("control", lambda: self.stream.push_control("change"))

    @rule(sending=st.booleans())
    def write_under_way(self, sending: bool) -> None:
        if self.stream.state is not I:  # the driver only writes when the flusher cannot
            self.stream.sending = sending

    @rule(reason=st.sampled_from(list(CloseReason)), graceful=st.booleans())
    def end_or_close(self, reason: CloseReason, graceful: bool) -> None:
        if graceful:
            self._report("end", lambda: self.stream.end_requested(reason))
        else:
            self._report("close", lambda: self.stream.close_requested(reason))
        if self.reason is None:
            self.reason = reason
        self.ended = True

    @precondition(lambda self: self.ended)
    @rule()
    def task_returns(self) -> None:
        self.stream.sending = False
        self._report("finished", self.stream.finished)

    @invariant()
    def legal(self) -> None:
        stream = self.stream
        assert stream.state in StreamState
        if stream.state in (E, C):
            assert stream.reason is not None
        assert stream.reason == self.reason  # set once, by the first end; never changed
        if stream.state is I:
            assert stream.pending == 0 and stream.pending_controls == 0 and not stream.sending
        assert 0 <= stream.pending <= stream.queue_size
        assert 0 <= stream.pending_controls <= CONTROL_RESERVE
        assert stream.pending == sum(len(item) for item in stream.queue if type(item) is list)
        assert self.written == sorted(set(self.written))  # never a duplicate, never out of order
        if stream.write_failed:
            assert not stream.can_finish


RandomDriver.TestCase.settings = settings(max_examples=300, stateful_step_count=40, deadline=None)
test_random_event_sequences_never_reach_an_illegal_state = RandomDriver.TestCase


@given(st.lists(st.sampled_from(sorted(EVENTS)), max_size=30))
def test_once_closed_a_stream_stays_closed_with_its_first_reason(names: list[str]) -> None:
    stream = stream_in(W)
    stream.close_requested("memory_pressure")
    for name in names:
        try:
            EVENTS[name](stream)
        except StreamStateError:  # pragma: no cover - CLOSED absorbs every event
            raise AssertionError(f"CLOSED refused {name}") from None
        assert stream.state is C and stream.close_reason == "memory_pressure"

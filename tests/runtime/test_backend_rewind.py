"""``Backend.rewind``: the newest N matching events, oldest first, on both backends."""

from __future__ import annotations

from typing import Any

import trio_sse
from trio_sse.core.validation import NewEvent
from trio_sse.settings import Settings


def new(project: str | None, n: int) -> NewEvent:
    return NewEvent(type="t", data_json=str(n).encode(), project_id=project)


async def test_rewind_returns_the_newest_matching_events_oldest_first(backend: dict[str, Any]) -> None:
    async with trio_sse.open_hub(Settings(**backend)) as hub:
        stored = await hub.backend.append([new("a" if n % 3 == 0 else "b", n) for n in range(30)])
        a_events = [e for e in stored if e.project_id == "a"]
        got = await hub.backend.rewind(4, lambda e: e.project_id == "a")
        assert [e.id for e in got] == [e.id for e in a_events[-4:]]
        assert [e.id for e in await hub.backend.rewind(100, lambda e: True)] == [e.id for e in stored]
        assert await hub.backend.rewind(0, lambda e: True) == []
        assert await hub.backend.rewind(5, lambda e: e.project_id == "zzz") == []

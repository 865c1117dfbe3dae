"""The embedded backend: ids from a local generator, replay from an in-process ring.

Appending never awaits, so a publish and its fan-out happen in one step: no other
task can observe an event that is in the history but not yet delivered.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import trio

from ...core.events import Event, EventIdGenerator, make_event
from ...core.history import History, Replay
from ...core.validation import NewEvent
from . import Deliver, HistoryGap

__all__ = ["MemoryBackend"]


class MemoryBackend:
    kind = "memory"
    status = "ok"

    def __init__(self, history_size: int, *, project_history_size: int = 0, history_ttl: float = 0.0) -> None:
        self.history = History(history_size, project_capacity=project_history_size, ttl=history_ttl)
        self._ids = EventIdGenerator()
        self._deliver: Deliver = lambda events: None

    async def run(
        self,
        deliver: Deliver,
        history_gap: HistoryGap | None = None,  # never called: this backend delivers what it stores
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self._deliver = deliver
        task_status.started()

    async def append(self, batch: Sequence[NewEvent]) -> list[Event]:
        now = trio.current_time()
        wall_ms = time.time_ns() // 1_000_000
        events = [
            make_event(self._ids.next(wall_ms), item.type, item.data_json, item.project_id, now, item.tags)
            for item in batch
        ]
        for event in events:
            self.history.append(event)
        self._deliver(events)
        return events

    async def replay_after(
        self, last_event_id: str, matches: Callable[[Event], bool], *, project: str | None = None
    ) -> Replay:
        return self.history.replay_after(last_event_id, matches, project=project, now=trio.current_time())

    async def rewind(self, count: int, matches: Callable[[Event], bool], *, project: str | None = None) -> list[Event]:
        return self.history.newest_matching(count, matches, project=project, now=trio.current_time())

    async def catch_up(self) -> None:
        """Nothing held back: every event is delivered as it is appended."""

    async def refresh_stats(self) -> None:
        """Up to date but for ``history_ttl``: expired events leave now."""
        self.history.expire(trio.current_time())

    @property
    def resume_point(self) -> str | None:
        return None  # every event stored here is delivered: the hub knows the newest

    def history_stats(self) -> dict[str, Any]:
        oldest, newest = self.history.oldest, self.history.newest
        return {
            "size": len(self.history),
            "capacity": self.history.capacity,
            "project_capacity": self.history.project_capacity,
            "projects": self.history.projects_tracked,
            "ttl": self.history.ttl,
            "bytes": self.history.nbytes,
            "max_bytes": self.history.max_bytes,
            "oldest_id": oldest.id if oldest else None,
            "newest_id": newest.id if newest else None,
        }

"""Event backends: where published events get their ids and where replay reads from.

A backend appends validated events (giving them ids in publish order), hands every
committed event to the hub's ``deliver`` callback exactly once, and answers replay
questions. ``memory`` keeps everything in this process; a shared backend (Redis
Streams, see the scale-out docs) lets several instances share ids and history.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import trio

from ...core.events import Event
from ...core.history import Replay
from ...core.validation import NewEvent
from ...settings import backend_kind

__all__ = ["Backend", "BackendConfigError", "BackendUnavailable", "Deliver", "HistoryGap", "make_backend"]

Deliver = Callable[[Sequence[Event]], None]
#: Called when the backend may have missed committed events after the given id (``None``:
#: before any it delivered) and will not deliver them: live streams must be told.
HistoryGap = Callable[[str | None], None]


class BackendUnavailable(RuntimeError):
    """The shared engine cannot be reached; the publish was not stored (HTTP 503)."""


class Backend(Protocol):
    kind: str

    @property
    def status(self) -> str:
        """``ok``, or ``degraded`` while the engine is unreachable."""
        ...

    async def run(
        self, deliver: Deliver, history_gap: HistoryGap | None = None, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Background work (e.g. reading a shared stream); reports ready via ``task_status``.

        Committed events go to ``deliver``, each once, in order. A backend that learns it
        may have skipped some (a shared stream trimmed or lost them before it read them)
        calls ``history_gap`` at that point of the sequence instead of staying silent.
        """
        ...

    @property
    def resume_point(self) -> str | None:
        """Id of the newest stored event this instance will not deliver (it comes before
        where delivery starts), or ``None``: where a new stream can resume from before the
        hub has delivered anything (the ``Last-Event-ID`` response header)."""
        ...

    async def append(self, batch: Sequence[NewEvent]) -> list[Event]:
        """Store ``batch`` atomically in order and return the events with their ids.

        Raises :class:`BackendUnavailable` when nothing could be stored.
        """
        ...

    async def replay_after(
        self, last_event_id: str, matches: Callable[[Event], bool], *, project: str | None = None
    ) -> Replay:
        """Events after ``last_event_id`` that satisfy ``matches``, or a reset reason.

        ``project`` is the stream's project filter (``matches`` refuses other projects'
        events): with it the replay reads that project's window and the broadcasts'
        (retention per project, docs/concepts.md); without it, the global window.
        """
        ...

    async def rewind(self, count: int, matches: Callable[[Event], bool], *, project: str | None = None) -> list[Event]:
        """The newest ``count`` stored events that satisfy ``matches``, oldest first.

        What ``?rewind=N`` sends a new stream before live events; ``project`` as for
        :meth:`replay_after` (it only makes the walk cheaper). Raises
        :class:`BackendUnavailable` when the engine is needed and cannot be reached.
        """
        ...

    async def catch_up(self) -> None:
        """Hand on now what this instance's reader holds back to read in one go (a shared
        backend reads once per fan-out round), so that what was published before a new
        stream registers goes to its replay, not live. A no-op for a backend that delivers
        as it stores."""
        ...

    def history_stats(self) -> dict[str, Any]:
        """``size``, ``capacity``, ``oldest_id`` and ``newest_id``."""
        ...

    async def refresh_stats(self) -> None:
        """Bring ``history_stats`` up to date before a report (a no-op when it always is)."""
        ...


class BackendConfigError(ValueError):
    """The configured backend cannot be used by this build."""


def make_backend(
    url: str,
    history_size: int,
    *,
    stream_key: str = "trio_sse:events",
    project_history_size: int = 0,
    history_ttl: float = 0.0,
    read_pace: float = 0.0,
) -> Backend:
    """The backend a ``backend`` setting names: ``memory`` or a ``redis://`` / ``rediss://`` / ``unix://`` URL.

    ``project_history_size`` and ``history_ttl`` are the retention settings (0: off);
    ``read_pace`` is a shared backend's least time between two reads of its stream (the
    hub passes its ``flush_interval``: at most one read per fan-out round).

    The URL is judged by :func:`trio_sse.settings.backend_kind`, the settings' own check
    (``SettingsError`` for one it refuses).
    """
    if backend_kind(url) == "memory":
        from .memory import MemoryBackend

        return MemoryBackend(history_size, project_history_size=project_history_size, history_ttl=history_ttl)
    from .redis import RedisBackend

    return RedisBackend(
        url,
        history_size,
        stream_key=stream_key,
        project_history_size=project_history_size,
        history_ttl=history_ttl,
        read_pace=read_pace,
    )

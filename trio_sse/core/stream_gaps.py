"""Could a stream reader have missed entries? The sans-IO half of the Redis reader's gap check.

The Redis reader follows the shared stream with ``XREAD`` from its *position*: the last
id it handed to the hub. ``XREAD`` answers "the stored entries after that id": if the
stream's trim (``XADD … MAXLEN ~``) removed some before the reader got to them, or Redis
came back from a restart without them, the reply does not say so. These functions
decide, from a few facts the reader asks Redis for, whether that may have happened, so
the hub can tell every live stream (``stream_reset`` / ``history_gap``) instead of
skipping events in silence.

What makes it decidable: trio_sse never deletes single entries (no ``XDEL``) and a trim
removes the *oldest* entries first, so what a stream has lost to trimming is always a
prefix of it. Hence:

- a position that is an entry of the stream and *still stored* after the ``XREAD``
  proves that nothing after it was trimmed before the read: the reply began with its
  true successor;
- a position that was stored and is gone was trimmed (the reader is a whole
  ``MAXLEN`` behind) or lost by Redis: entries right after it may be gone too. That
  counts as a gap -- sometimes a reset too many, never a loss unsaid;
- a position that names no entry (a *floor*: ``0-0`` at an instance's start when the
  stream holds nothing older, or an id Redis has lost) is judged by the stream's trim
  count (``entries-added - length``, ``XINFO STREAM``): the floor is taken when the
  stream holds nothing older than it, so any entry trimmed since came after it.
- after a reconnection, a stream whose ``last-generated-id`` is older than the
  position (or that is missing) came back without entries that had been stored:
  Redis restarted without persistence or from an older RDB/AOF. Entries no reader had
  read may have gone with them.

Nothing here does I/O; ids are compared as :data:`~trio_sse.core.events.EventOrder`.
"""

from __future__ import annotations

from .events import EventOrder

__all__ = ["lost_in_restart", "missed_before_read"]


def missed_before_read(*, was_stored: bool, still_stored: bool, trimmed_then: int, trimmed_now: int | None) -> bool:
    """Whether entries after the position may be gone before the ``XREAD`` from it.

    Asked when the ``XREAD`` returned entries, before they are handed on.
    ``was_stored``: the position is an entry the stream held (one the reader read, or
    the newest entry before the instance started); ``False`` for a floor.
    ``still_stored``: the position is in the stream now, asked *after* the ``XREAD``.
    ``trimmed_then``: for a floor, how many entries the stream had trimmed when the
    floor was taken; ``trimmed_now``: how many it has trimmed now, ``None`` when
    unknown (Redis before 7 has no ``entries-added``).
    """
    if was_stored:
        return not still_stored
    if trimmed_now is None:
        return True
    return trimmed_now > trimmed_then


def lost_in_restart(position: EventOrder, *, was_stored: bool, last_generated: EventOrder | None) -> bool:
    """Whether Redis came back without the position (and so, maybe, entries after it).

    Asked when the reader reconnects after an error. ``last_generated``: the stream's
    ``last-generated-id``, ``None`` when the stream does not exist. A floor has nothing
    to lose.
    """
    if not was_stored:
        return False
    return last_generated is None or last_generated < position

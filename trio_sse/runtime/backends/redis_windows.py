"""The Redis backend's project windows: the append script, and replays and rewinds read from them.

Layout (docs/deploy.md): the shared stream ``<stream>`` holds every event (ids are its
ids: global and ordered); each project's window is a stream ``<stream>:{p:<project>}``
(broadcasts: ``<stream>:{b}``) holding that project's newest ``project_history_size``
events under the same ids, and ``<window>:left`` the id of the newest event that left it
(pushed out by the next). The braces are Redis Cluster hash tags: a window and its
``:left`` key share a slot of their own, the project's.

One Lua script writes an event to the shared stream and to its window, so a committed
event is in both or in neither: the script runs atomically. A Cluster would refuse it
(a script's keys must share a slot), the trade-off docs/deploy.md explains.

What must never happen here is a replay that skips an event in silence: a window answers
only when it holds everything the filter needs after the client's id (nothing left it
since), and otherwise the caller falls back to the shared stream.
"""

from __future__ import annotations

from collections.abc import Callable
from heapq import merge
from typing import Any

import coredis

from ...core.events import Event, EventOrder, parse_event_id
from ...core.retention import NEVER
from .redis_reader import entry_text, event_from_entry

__all__ = ["APPEND_SCRIPT", "replay_from_windows", "rewind_from_windows"]

#: KEYS[1]: the shared stream; KEYS[1 + i]: event i's window. ARGV: history_size,
#: project_history_size, the MINID for ``history_ttl`` ('' = none), the ttl in ms, then
#: per event its field count and fields. Returns the ids Redis gave, in order.
APPEND_SCRIPT = """
local shared, size, window_size = KEYS[1], ARGV[1], tonumber(ARGV[2])
local minid, ttl_ms = ARGV[3], tonumber(ARGV[4])
local ids, written = {}, {}
local at = 5
for i = 2, #KEYS do
  local n = tonumber(ARGV[at])
  local fields = {}
  for j = 1, n do fields[j] = ARGV[at + j] end
  at = at + n + 1
  local id = redis.call('XADD', shared, 'MAXLEN', '~', size, '*', unpack(fields))
  if window_size > 0 then
    local key = KEYS[i]
    local excess = redis.call('XLEN', key) + 1 - window_size
    if excess > 0 then
      local gone = redis.call('XRANGE', key, '-', '+', 'COUNT', excess)
      redis.call('SET', key .. ':left', gone[#gone][1])
    end
    local added = redis.pcall('XADD', key, 'MAXLEN', window_size, id, unpack(fields))
    if type(added) == 'table' and added.err then
      -- The window is ahead of the shared stream (Redis came back without entries the
      -- window kept): start it again rather than fail a publish already stored.
      redis.call('DEL', key, key .. ':left')
      redis.call('XADD', key, 'MAXLEN', window_size, id, unpack(fields))
    end
    written[key] = true
  end
  ids[#ids + 1] = id
end
if minid ~= '' then
  redis.call('XTRIM', shared, 'MINID', '~', minid)
  for key in pairs(written) do
    redis.call('XTRIM', key, 'MINID', minid)
    redis.call('PEXPIRE', key, ttl_ms)
    redis.call('PEXPIRE', key .. ':left', ttl_ms)
  end
end
return ids
"""


def _order_of(raw: Any) -> EventOrder:
    order = parse_event_id(entry_text(raw)) if raw is not None else None
    return order if order is not None else NEVER


def _entry_order(entry: Any) -> EventOrder:
    return _order_of(entry.identifier)


async def replay_from_windows(
    client: coredis.Redis[bytes],
    keys: list[str],
    last_event_id: str,
    order: EventOrder,
    matches: Callable[[Event], bool],
) -> list[Event] | None:
    """The events after ``last_event_id`` in the windows ``keys`` (a project's and the
    broadcasts'), oldest first, or ``None`` when the windows cannot answer alone.

    They can when one of them holds the id itself and nothing left either since the id
    (its ``:left`` is not newer): then every event of theirs after the id is there. One
    round trip, reading at most the two windows.
    """
    async with client.pipeline(transaction=False) as pipe:
        itself = [pipe.xrange(key, last_event_id, last_event_id, count=1) for key in keys]
        left = [pipe.get(f"{key}:left") for key in keys]
        after = [pipe.xrange(key, f"({last_event_id}", "+") for key in keys]
    if not any([await found for found in itself]):
        return None
    lefts = [_order_of(await raw) for raw in left]
    if any(gone > order for gone in lefts):
        return None
    parts = [await entries for entries in after]
    events = (event_from_entry(entry) for entry in merge(*parts, key=_entry_order))
    return [event for event in events if matches(event)]


async def rewind_from_windows(
    client: coredis.Redis[bytes],
    keys: list[str],
    count: int,
    matches: Callable[[Event], bool],
    floor: EventOrder,
) -> list[Event] | None:
    """The newest ``count`` matching events of the windows ``keys``, oldest first, or
    ``None`` when the shared stream may hold newer ones that left a window.

    Events older than ``floor`` (``history_ttl``) are left out. A window that never lost
    an event holds all of its project's; one that did is complete down to its oldest
    entry only, so the answer stands if ``count`` matches are found above that.
    """
    async with client.pipeline(transaction=False) as pipe:
        left = [pipe.get(f"{key}:left") for key in keys]
        windows = [pipe.xrevrange(key, "+", "-") for key in keys]
    parts = [await entries for entries in windows]
    cut = NEVER
    for raw, entries in zip([await raw for raw in left], parts, strict=True):
        if raw is not None and entries:
            cut = max(cut, _entry_order(entries[-1]))
    found: list[Event] = []
    for entry in merge(*parts, key=_entry_order, reverse=True):
        entry_order = _entry_order(entry)
        if entry_order < cut or entry_order < floor:
            break
        event = event_from_entry(entry)
        if matches(event):
            found.append(event)
            if len(found) == count:
                break
    if len(found) < count and cut != NEVER:
        return None
    found.reverse()
    return found

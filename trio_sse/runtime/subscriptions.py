"""Subscriptions: validated filters, how clients see them, and changing a live stream's.

A filter change is applied in the stream's own order: events committed before it are
fanned out under the old filters first, then the stream gets ``subscription_updated``
(and, with ``last_event_id``, the replay under the new filters) before any event only
the new filters match.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Any

from ..core.errors import InvalidValue
from ..core.events import system_event
from ..core.matching import Subscription
from ..core.validation import TagFilter, check_event_types, check_project_id, check_rewind, check_tag_filter
from .connection import Connection, Resubscribe
from .flusher import Flusher
from .registry import Registry, UnknownConnection

__all__ = ["UNSET", "Mode", "Subscriptions", "TooManyPendingChanges", "check_subscribe_rewind", "parse_mode"]

UNSET: Any = object()


class TooManyPendingChanges(Exception):
    """A connection has not yet applied its earlier filter changes."""


class Mode(enum.StrEnum):
    """How ``event_types`` changes a live stream's types."""

    REPLACE = "replace"
    ADD = "add"
    REMOVE = "remove"


def parse_mode(mode: Any) -> Mode:
    """``mode`` as a :class:`Mode`; raises ``InvalidValue`` (the one check, for the API and the hub)."""
    try:
        return Mode(mode)
    except ValueError:
        raise InvalidValue("mode must be one of replace, add, remove") from None


def check_subscribe_rewind(rewind: Any, last_event_id: str | None, max_rewind: int) -> int:
    """``/sse/subscribe``'s ``rewind``: 0..``max_rewind``, and not with ``last_event_id``.

    The two ask for different things (everything after an id; the newest N), and unlike a
    browser's reconnect, where the URL's ``rewind`` stays and the header decides, a body
    holding both is a mistake: ``InvalidValue`` rather than a silent choice.
    """
    count = check_rewind(rewind, max_rewind)
    if count and last_event_id is not None:
        raise InvalidValue("give rewind or last_event_id, not both")
    return count


def change_tags(current: TagFilter, tags: Any, change: Mode) -> TagFilter:
    """The tag filter after ``/sse/subscribe``'s ``tags`` under ``mode``; ``None`` clears it.

    ``replace`` sets the filter to ``tags``. ``add`` widens: it adds values to the names
    already filtered (a name not filtered already accepts every value, and stays so).
    ``remove`` narrows: it takes values out of the names filtered (a name whose values
    all go accepts none: the stream gets no event until the filter changes again);
    a name not filtered is left alone. As ``event_types`` does, ``add`` never narrows and
    ``remove`` never widens.
    """
    if tags is None:
        return ()
    given = dict(check_tag_filter(tags))
    if change is Mode.REPLACE:
        return tuple(sorted(given.items()))
    merged = dict(current)
    for name, values in given.items():
        if name in merged:
            merged[name] = merged[name] | values if change is Mode.ADD else merged[name] - values
    return tuple(sorted(merged.items()))


#: Distinct filters kept for sharing between streams (see ``Subscriptions.subscription``).
SHARED_SUBSCRIPTIONS = 1024


class Subscriptions:
    """The registered event types, and filter changes of live connections."""

    def __init__(self, event_types: frozenset[str], registry: Registry, flusher: Flusher) -> None:
        self.event_types = event_types
        self._sorted_types = sorted(event_types)
        self._registry = registry
        self._flusher = flusher
        self._shared: dict[Subscription, Subscription] = {}

    def subscription(self, event_types: Iterable[str] | None, project_id: str | None, tags: Any = None) -> Subscription:
        """A validated subscription; ``None`` types means every type, ``None`` tags no tag filter."""
        types = None if event_types is None else check_event_types(event_types, self.event_types)
        subscription = Subscription(types, check_project_id(project_id), check_tag_filter(tags))
        # Equal filters share one (immutable) object: thousands of streams with the same
        # types would each hold a frozenset (~0.2 KB) and a Subscription otherwise.
        shared = self._shared.get(subscription)
        if shared is not None:
            return shared
        if len(self._shared) >= SHARED_SUBSCRIPTIONS:
            self._shared.clear()  # bounded, whatever filters clients send
        self._shared[subscription] = subscription
        return subscription

    def describe(self, connection: Connection) -> dict[str, Any]:
        """The filters as clients see them in ``connected`` and ``subscription_updated``."""
        sub = connection.subscription
        types = self._sorted_types if sub.event_types is None else sorted(sub.event_types)
        described: dict[str, Any] = {"connection_id": connection.id, "event_types": types, "project_id": sub.project_id}
        if sub.tags:
            # Only with a tag filter (values sorted): a stream without one, the common case,
            # keeps the exact shape the contract gives for ``connected``.
            described["tags"] = {name: sorted(values) for name, values in sub.tags}
        return described

    def update(
        self,
        connection_id: str,
        event_types: Iterable[str],
        *,
        mode: Any = Mode.REPLACE,
        project_id: Any = UNSET,
        last_event_id: str | None = None,
        tags: Any = UNSET,
        rewind: int = 0,
    ) -> Subscription:
        """Change a live connection's filters (see :meth:`trio_sse.runtime.hub.Hub.update_subscription`;
        ``rewind`` is checked there, against the settings)."""
        connection = self._registry.get(connection_id)
        if connection.close_reason is not None:
            raise UnknownConnection(connection_id)
        types = check_event_types(event_types, self.event_types)
        change = parse_mode(mode)
        current = connection.subscription
        current_types = self.event_types if current.event_types is None else current.event_types
        new_types: frozenset[str] | None
        if change is Mode.REPLACE:
            new_types = types
        elif change is Mode.ADD:
            new_types = None if current.event_types is None else current_types | types
        else:
            new_types = current_types - types
        if new_types is not None and new_types == self.event_types and current.event_types is None:
            new_types = None
        project = current.project_id if project_id is UNSET else check_project_id(project_id)
        new_tags = current.tags if tags is UNSET else change_tags(current.tags, tags, change)
        new = Subscription(new_types, project, new_tags)
        # Events committed before the change are fanned out under the filters they met
        # (which may close this connection as a slow consumer).
        self._flusher.flush()
        if connection.close_reason is not None:
            raise UnknownConnection(connection_id)
        connection.subscription = new
        announcement = system_event("subscription_updated", self.describe(connection))
        if not connection.push_control(Resubscribe(new, current, announcement, last_event_id, rewind)):
            connection.subscription = current
            raise TooManyPendingChanges(connection_id)
        self._registry.resubscribe(connection, new)
        return new

"""Subscription filters and the index that finds the subscribers of one event.

A subscription is a set of event types (``None`` = every type) and an optional
project. A connection filtered to project P receives P's events and the events that
have no project (broadcasts). The index answers "who wants this event" by looking at
the buckets for its type and project only, never by scanning every subscriber.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterator
from typing import Generic, TypeVar

import attrs

from .events import Event

__all__ = ["Subscription", "SubscriptionIndex"]

K = TypeVar("K", bound=Hashable)


@attrs.frozen(slots=True)
class Subscription:
    event_types: frozenset[str] | None = None
    project_id: str | None = None

    def matches(self, event_type: str, project_id: str | None) -> bool:
        return (self.event_types is None or event_type in self.event_types) and (
            self.project_id is None or project_id is None or project_id == self.project_id
        )

    def accepts(self, event: Event) -> bool:
        return self.matches(event.type, event.project_id)


class SubscriptionIndex(Generic[K]):
    """Maps (event type, project) buckets to subscriber keys.

    ``matching`` yields every key whose subscription matches, each exactly once.
    Do not add or remove keys while iterating over ``matching``.
    """

    __slots__ = ("_by_type", "_subscriptions")

    def __init__(self) -> None:
        # event type (None = all types) -> project filter (None = no filter) -> keys
        self._by_type: dict[str | None, dict[str | None, set[K]]] = {}
        self._subscriptions: dict[K, Subscription] = {}

    def __len__(self) -> int:
        return len(self._subscriptions)

    def __contains__(self, key: object) -> bool:
        return key in self._subscriptions

    def get(self, key: K) -> Subscription | None:
        return self._subscriptions.get(key)

    def add(self, key: K, subscription: Subscription) -> None:
        """Index ``key`` under ``subscription``, replacing any previous subscription."""
        self.remove(key)
        self._subscriptions[key] = subscription
        types: frozenset[str | None] | tuple[None] = (
            (None,) if subscription.event_types is None else subscription.event_types
        )
        for event_type in types:
            projects = self._by_type.setdefault(event_type, {})
            projects.setdefault(subscription.project_id, set()).add(key)

    def remove(self, key: K) -> None:
        """Forget ``key``; a key not in the index is ignored."""
        subscription = self._subscriptions.pop(key, None)
        if subscription is None:
            return
        types: frozenset[str | None] | tuple[None] = (
            (None,) if subscription.event_types is None else subscription.event_types
        )
        for event_type in types:
            projects = self._by_type[event_type]
            keys = projects[subscription.project_id]
            keys.discard(key)
            if not keys:
                del projects[subscription.project_id]
                if not projects:
                    del self._by_type[event_type]

    def matching(self, event_type: str, project_id: str | None) -> Iterator[K]:
        for type_key in (event_type, None):
            projects = self._by_type.get(type_key)
            if not projects:
                continue
            if project_id is None:  # a broadcast: every project bucket matches
                for keys in projects.values():
                    yield from keys
            else:
                for project_key in (project_id, None):
                    bucket = projects.get(project_key)
                    if bucket:
                        yield from bucket

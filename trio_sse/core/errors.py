"""Errors the core raises for refused input; the HTTP layer maps each class to a status."""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["EventTooLarge", "InvalidTags", "InvalidValue", "UnknownEventTypes", "ValidationError"]


class ValidationError(ValueError):
    """Input refused; nothing was changed."""


class InvalidValue(ValidationError):
    """Malformed value (HTTP 400)."""


class EventTooLarge(ValidationError):
    """Event data larger than ``max_event_bytes`` (HTTP 413)."""


class UnknownEventTypes(ValidationError):
    """Event types that are not registered (HTTP 422)."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = sorted(set(names))
        super().__init__(f"unknown event types: {', '.join(self.names)}")


class InvalidTags(ValidationError):
    """Tags (or a tag filter) that break the tag rules (HTTP 422), each named."""

    def __init__(self, names: Iterable[str], why: str) -> None:
        self.names = sorted(set(names))
        super().__init__(f"invalid tags: {', '.join(self.names)} ({why})")

"""Validation of what publishers and subscribers send, before anything changes.

Each function either returns a clean value or raises a :class:`ValidationError`
subclass that says what is wrong; the HTTP layer maps the subclass to a status.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import attrs

from .errors import EventTooLarge, InvalidValue, UnknownEventTypes, ValidationError
from .events import dumps_json

__all__ = [
    "FORBIDDEN_CHARACTERS",
    "MAX_EVENT_ID_LENGTH",
    "MAX_PROJECT_ID_LENGTH",
    "EventTooLarge",
    "InvalidValue",
    "NewEvent",
    "UnknownEventTypes",
    "ValidationError",
    "check_event_types",
    "check_project_id",
    "has_forbidden_characters",
    "prepare_event",
]

MAX_PROJECT_ID_LENGTH = 256
MAX_EVENT_ID_LENGTH = 256

#: What no id or name a client or publisher gives may contain: the C0 controls (CR, LF,
#: NUL, TAB, VT, FF, the separators U+001C-U+001E ...), DEL, the C1 controls (NEL U+0085
#: among them) and the Unicode line and paragraph separators U+2028 and U+2029. The
#: WHATWG EventSource parser ends lines at CR and LF only, but these values also travel
#: inside JSON (``connected``, ``stream_reset``, the audit log), where orjson writes
#: everything but the C0 controls raw; and ``str.splitlines()`` (in many SSE clients and
#: log tools) breaks lines at VT, FF, U+001C-U+001E, NEL, U+2028 and U+2029, as JavaScript
#: before ES2019 did at U+2028/U+2029 in string literals.
FORBIDDEN_CHARACTERS = r"\x00-\x1f\x7f-\x9f\u2028\u2029"  # a regular expression class
_FORBIDDEN = re.compile(f"[{FORBIDDEN_CHARACTERS}]")
_PROJECT_ID = re.compile(f"[^{FORBIDDEN_CHARACTERS}]{{1,{MAX_PROJECT_ID_LENGTH}}}")


def has_forbidden_characters(value: str) -> bool:
    """Whether ``value`` holds a control character or a line separator (see :data:`FORBIDDEN_CHARACTERS`)."""
    return _FORBIDDEN.search(value) is not None


@attrs.frozen(slots=True)
class NewEvent:
    """A validated event not yet given an id: what a backend appends."""

    type: str
    data_json: bytes
    project_id: str | None


def check_project_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _PROJECT_ID.fullmatch(value):
        raise InvalidValue(
            f"project_id must be a string of 1-{MAX_PROJECT_ID_LENGTH} characters"
            " without control characters or line separators"
        )
    return value


def check_event_types(names: Iterable[str], registered: frozenset[str]) -> frozenset[str]:
    """The names as a set; raises :class:`UnknownEventTypes` naming every unregistered one."""
    wanted = frozenset(names)
    unknown = wanted - registered
    if unknown:
        raise UnknownEventTypes(unknown)
    return wanted


def prepare_event(
    event_type: Any, data: Any, project_id: Any, *, registered: frozenset[str], max_event_bytes: int
) -> NewEvent:
    """Validate one publish request and serialise its data once."""
    if not isinstance(event_type, str):
        raise InvalidValue("event_type must be a string")
    check_event_types((event_type,), registered)
    project = check_project_id(project_id)
    data_json = dumps_json(data)
    if len(data_json) > max_event_bytes:
        raise EventTooLarge(f"event data is {len(data_json)} bytes; the limit is {max_event_bytes}")
    return NewEvent(event_type, data_json, project)

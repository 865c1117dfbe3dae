"""Validation of what publishers and subscribers send, before anything changes.

Each function either returns a clean value or raises a :class:`ValidationError`
subclass that says what is wrong; the HTTP layer maps the subclass to a status.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .errors import EventTooLarge, InvalidTags, InvalidValue, UnknownEventTypes, ValidationError
from .events import dumps_json

__all__ = [
    "FORBIDDEN_CHARACTERS",
    "MAX_EVENT_ID_LENGTH",
    "MAX_PROJECT_ID_LENGTH",
    "MAX_TAGS",
    "MAX_TAG_VALUE_LENGTH",
    "TAG_KEY_PATTERN",
    "EventTooLarge",
    "InvalidTags",
    "InvalidValue",
    "NewEvent",
    "TagFilter",
    "UnknownEventTypes",
    "ValidationError",
    "check_event_types",
    "check_project_id",
    "check_rewind",
    "check_tag_filter",
    "check_tag_value",
    "check_tags",
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


#: At most this many tag keys per event, and per stream's tag filter.
MAX_TAGS = 16
MAX_TAG_VALUE_LENGTH = 128
TAG_KEY_PATTERN = re.compile(r"[a-z][a-z0-9_]{0,31}")

#: A stream's tag filter: ``(key, accepted values)`` pairs sorted by key; ``()`` = no filter.
TagFilter = tuple[tuple[str, frozenset[str]], ...]


def has_forbidden_characters(value: str) -> bool:
    """Whether ``value`` holds a control character or a line separator (see :data:`FORBIDDEN_CHARACTERS`)."""
    return _FORBIDDEN.search(value) is not None


@attrs.frozen(slots=True)
class NewEvent:
    """A validated event not yet given an id: what a backend appends."""

    type: str
    data_json: bytes
    project_id: str | None
    tags: Mapping[str, str] | None = None


def check_project_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not _PROJECT_ID.fullmatch(value):
        raise InvalidValue(
            f"project_id must be a string of 1-{MAX_PROJECT_ID_LENGTH} characters"
            " without control characters or line separators"
        )
    return value


def _tag_key_ok(key: Any) -> bool:
    return isinstance(key, str) and TAG_KEY_PATTERN.fullmatch(key) is not None


def check_tag_value(value: Any) -> bool:
    """Whether ``value`` may be a tag value: a string of at most 128 characters without
    control characters or line separators (the rule ids and names follow, for the same
    reasons: tag values are echoed in JSON and logs)."""
    return isinstance(value, str) and len(value) <= MAX_TAG_VALUE_LENGTH and not has_forbidden_characters(value)


def _key_name(key: Any) -> str:
    return key if isinstance(key, str) else repr(key)


def _check_tag_names(value: Mapping[Any, Any], per: str) -> None:
    """The rules an event's tags and a stream's tag filter share: at most :data:`MAX_TAGS`
    names, each matching :data:`TAG_KEY_PATTERN`; raises :class:`InvalidTags` naming them."""
    if len(value) > MAX_TAGS:
        raise InvalidTags(sorted(map(_key_name, value))[MAX_TAGS:], f"at most {MAX_TAGS} tags per {per}")
    bad_keys = [_key_name(k) for k in value if not _tag_key_ok(k)]
    if bad_keys:
        raise InvalidTags(bad_keys, f"tag names must match ^{TAG_KEY_PATTERN.pattern}$")


def check_tags(value: Any) -> dict[str, str] | None:
    """A published event's ``tags``: ``None`` (or ``{}``) for none; raises :class:`InvalidTags`
    naming every bad key (bad name, or bad value under it)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InvalidTags(["tags"], "tags must be an object of string keys to string values")
    _check_tag_names(value, "event")
    bad_values = [k for k, v in value.items() if not check_tag_value(v)]
    if bad_values:
        raise InvalidTags(
            bad_values,
            f"tag values must be strings of at most {MAX_TAG_VALUE_LENGTH} characters"
            " without control characters or line separators",
        )
    return dict(value) or None


def check_tag_filter(value: Any) -> TagFilter:
    """A stream's tag filter from ``{"key": ["v1", "v2"], ...}`` (``None`` = no filter).

    Raises :class:`InvalidTags` naming every bad key; an empty value list is refused
    (it would match nothing; leave the key out to accept every value).
    """
    if value is None:
        return ()
    if not isinstance(value, Mapping):
        raise InvalidTags(["tags"], "tags must be an object of tag names to lists of values")
    _check_tag_names(value, "filter")
    bad_values = [
        k
        for k, values in value.items()
        if not isinstance(values, list | tuple | frozenset | set)
        or not values
        or not all(check_tag_value(v) for v in values)
    ]
    if bad_values:
        raise InvalidTags(
            bad_values,
            "each tag filter is a non-empty list of strings of at most"
            f" {MAX_TAG_VALUE_LENGTH} characters without control characters or line separators",
        )
    return tuple(sorted((k, frozenset(vs)) for k, vs in value.items()))


def check_rewind(value: Any, limit: int) -> int:
    """A rewind count: an integer from 0 to ``limit`` (``max_rewind``); else :class:`InvalidValue`.

    ``bool`` is refused although Python counts it as an ``int``: ``"rewind": true`` in a
    JSON body is a mistake, not a request for one event.
    """
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidValue("rewind must be a whole number")
    if not 0 <= value <= limit:
        raise InvalidValue(f"rewind must be between 0 and {limit} (max_rewind), got {value}")
    return value


def check_event_types(names: Iterable[str], registered: frozenset[str]) -> frozenset[str]:
    """The names as a set; raises :class:`UnknownEventTypes` naming every unregistered one."""
    wanted = frozenset(names)
    unknown = wanted - registered
    if unknown:
        raise UnknownEventTypes(unknown)
    return wanted


def prepare_event(
    event_type: Any,
    data: Any,
    project_id: Any,
    *,
    registered: frozenset[str],
    max_event_bytes: int,
    tags: Any = None,
) -> NewEvent:
    """Validate one publish request and serialise its data once."""
    if not isinstance(event_type, str):
        raise InvalidValue("event_type must be a string")
    check_event_types((event_type,), registered)
    project = check_project_id(project_id)
    checked_tags = check_tags(tags)
    data_json = dumps_json(data)
    if len(data_json) > max_event_bytes:
        raise EventTooLarge(f"event data is {len(data_json)} bytes; the limit is {max_event_bytes}")
    return NewEvent(event_type, data_json, project, checked_tags)

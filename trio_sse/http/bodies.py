"""Request bodies: size limits and JSON parsing shared by the Quart routes and the lean handlers."""

from __future__ import annotations

from typing import Any

import orjson

from .errors import ApiError

__all__ = ["json_object", "parse_json", "too_large"]


def too_large(max_bytes: int) -> ApiError:
    return ApiError(413, "body_too_large", f"request body is larger than {max_bytes} bytes")


def parse_json(body: bytes, *, required: bool = True) -> Any:
    """``body`` as JSON; 400 when malformed (or empty and required). Empty and optional gives None."""
    if not body.strip():
        if required:
            raise ApiError(400, "invalid_json", "a JSON body is required")
        return None
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc.msg}") from None


def json_object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "invalid_request", f"{what} must be a JSON object")
    return value

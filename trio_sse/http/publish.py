"""``POST /sse/publish`` as a lean ASGI handler.

Publishing is the hot write path of the API: served straight on ASGI it skips Quart's
per-request tasks and context, which were most of the cost of a single publish. The
contract is the same as every other route: JSON errors, 202 with the ids.
"""

from __future__ import annotations

from typing import Any

import orjson

from ..core.errors import ValidationError
from ..core.validation import NewEvent
from ..runtime.hub import Hub
from .auth import require_publish
from .bodies import asgi_chunks, declared_length, json_object, parse_json, read_body
from .caller import caller_of
from .errors import JSON_HEADERS, ApiError, send_refusal, to_api_error
from .params import client_address

__all__ = ["MAX_BATCH", "parse_publish", "serve_publish"]

MAX_BATCH = 1000


def _new_event(hub: Hub, item: Any, index: int | None) -> NewEvent:
    """One validated event; a refused batch item's error names its position (``index``)."""
    try:
        return _validated(hub, item, index)
    except ApiError as error:
        if index is not None:
            error.extra["index"] = index
        raise


def _validated(hub: Hub, item: Any, index: int | None) -> NewEvent:
    where = "" if index is None else f"events[{index}]: "
    item = json_object(item, "body" if index is None else f"events[{index}]")
    if "event_type" not in item:
        raise ApiError(400, "invalid_request", f"{where}event_type is required")
    if "data" not in item:
        raise ApiError(400, "invalid_request", f"{where}data is required")
    try:
        return hub.prepare(item["event_type"], item["data"], item.get("project_id"), item.get("tags"))
    except ValidationError as exc:
        error = to_api_error(exc)
        assert error is not None
        error.message = where + error.message
        raise error from None


def parse_publish(hub: Hub, body: Any) -> tuple[list[NewEvent], bool]:
    """Validate a publish body: ``(events, is_batch)``; raises ApiError, nothing published."""
    body = json_object(body, "body")
    if "events" not in body:
        return [_new_event(hub, body, None)], False
    items = body["events"]
    if not isinstance(items, list) or not items:
        raise ApiError(400, "invalid_request", "events must be a non-empty list")
    if len(items) > MAX_BATCH:
        raise ApiError(413, "batch_too_large", f"at most {MAX_BATCH} events per batch")
    return [_new_event(hub, item, i) for i, item in enumerate(items)], True


async def serve_publish(hub: Hub, scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Handle one ``POST /sse/publish`` from start to end."""
    sub: str | None = None  # known once the token is verified, for the audit line of a refusal
    try:
        principal = caller_of(hub.settings, scope)
        sub = principal.sub
        require_publish(principal)
        raw = await read_body(asgi_chunks(receive), hub.settings.max_body_bytes, declared_length(scope))
        body = parse_json(raw)
        batch, is_batch = parse_publish(hub, body)
        require_publish(principal, (event.project_id for event in batch))
        hub.admit_publish(principal.sub or client_address(scope) or "", len(batch))
        ids = await hub.publish_prepared(batch)
    except Exception as exc:
        error = to_api_error(exc)
        if error is None:
            raise
        await send_refusal(send, scope, error, sub=sub)
        return
    reply = orjson.dumps({"ids": ids} if is_batch else {"id": ids[0]})
    headers = [*JSON_HEADERS, (b"content-length", str(len(reply)).encode())]
    await send({"type": "http.response.start", "status": 202, "headers": headers})
    await send({"type": "http.response.body", "body": reply, "more_body": False})

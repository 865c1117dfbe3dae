"""Benchmark peer: a broadcast SSE hub written the usual way with sse-starlette.

Run (after scripts/peers/setup_starlette.sh):

    .bench/starlette-venv/bin/uvicorn --app-dir scripts/peers starlette_app:app \\
        --host 127.0.0.1 --port 8081 --workers 1 --log-level warning --no-access-log

    GET  /sse/events    every published event, to every subscriber (query params ignored)
    POST /sse/publish   {"event_type": T, "data": D}  -> 202 {"id": "<n>"}
                        {"events": [{...}, ...]}      -> 202 {"ids": ["<n>", ...]}

Each event goes out as ``id: <n>\\nevent: <T>\\ndata: <D as compact JSON>\\n\\n``
(the benchmark publishes T = system_status). Ids are a process-wide counter.

Design, as a competent sse-starlette user would write it (same knobs as trio_sse's
defaults, so the comparison is like for like):

* one bounded ``asyncio.Queue`` per subscriber (1000 events); a subscriber whose
  queue is full is disconnected (trio_sse's default ``overflow=disconnect``);
* an event is encoded once, with sse-starlette's ``ServerSentEvent``, at publish
  time; subscribers get the bytes. A subscriber that wakes up to a backlog writes
  all of it in one chunk (trio_sse drains its queue the same way);
* ``EventSourceResponse(ping=30, send_timeout=10, sep="\\n")``: a ``: ping - <time>``
  comment after 30 s, a write that blocks for 10 s ends the stream, LF line ends.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator
from typing import Any

import orjson
from sse_starlette import EventSourceResponse, ServerSentEvent
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# Environment overrides exist for tests of the peer itself; the benchmark uses the defaults.
QUEUE_SIZE = int(os.environ.get("PEER_QUEUE_SIZE", "1000"))
PING_INTERVAL = float(os.environ.get("PEER_PING_INTERVAL", "30"))  # seconds
SEND_TIMEOUT = 10.0  # seconds
MAX_BATCH = 1000
MAX_BODY_BYTES = 1024 * 1024
DEFAULT_EVENT_TYPE = "system_status"

_CLOSE = b""  # queued to a subscriber that overflowed: its stream ends

_subscribers: set[asyncio.Queue[bytes]] = set()
_ids = itertools.count(1)


def _json(body: Any, status: int) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": "invalid_request", "message": message}, status)


def _encode(item: Any) -> tuple[str, bytes]:
    """One publish item -> (id, wire bytes). Raises ValueError on a bad item."""
    if not isinstance(item, dict):
        raise ValueError("an event must be a JSON object")
    event_type = item.get("event_type", DEFAULT_EVENT_TYPE)
    if not isinstance(event_type, str) or not event_type or "\n" in event_type or "\r" in event_type:
        raise ValueError("event_type must be a non-empty single-line string")
    event_id = str(next(_ids))
    data = orjson.dumps(item.get("data")).decode()
    wire = ServerSentEvent(data=data, event=event_type, id=event_id, sep="\n").encode()
    return event_id, wire


def _fan_out(chunks: list[bytes]) -> None:
    for queue in list(_subscribers):
        try:
            for chunk in chunks:
                queue.put_nowait(chunk)
        except asyncio.QueueFull:
            # Slow consumer: drop it. Make room for the close marker and end its stream.
            _subscribers.discard(queue)
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(_CLOSE)


async def events(request: Request) -> EventSourceResponse:
    queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=QUEUE_SIZE)
    _subscribers.add(queue)

    async def stream() -> AsyncIterator[bytes]:
        try:
            while True:
                chunk = await queue.get()
                if queue.empty():
                    if not chunk:  # _CLOSE
                        return
                    yield chunk
                    continue
                backlog = [chunk]
                while not queue.empty():
                    backlog.append(queue.get_nowait())
                closing = _CLOSE in backlog
                if closing:
                    backlog = backlog[: backlog.index(_CLOSE)]
                yield b"".join(backlog)
                if closing:
                    return
        finally:
            _subscribers.discard(queue)

    return EventSourceResponse(stream(), ping=PING_INTERVAL, send_timeout=SEND_TIMEOUT, sep="\n")


async def publish(request: Request) -> Response:
    body_bytes = await request.body()
    if len(body_bytes) > MAX_BODY_BYTES:
        return _error(413, f"request body is larger than {MAX_BODY_BYTES} bytes")
    try:
        body = orjson.loads(body_bytes)
    except orjson.JSONDecodeError:
        return _error(400, "body is not valid JSON")
    if not isinstance(body, dict):
        return _error(400, "body must be a JSON object")
    try:
        if "events" in body:
            items = body["events"]
            if not isinstance(items, list) or not items:
                return _error(400, "events must be a non-empty list")
            if len(items) > MAX_BATCH:
                return _error(413, f"at most {MAX_BATCH} events per batch")
            encoded = [_encode(item) for item in items]
            _fan_out([wire for _, wire in encoded])
            return _json({"ids": [event_id for event_id, _ in encoded]}, 202)
        event_id, wire = _encode(body)
    except ValueError as exc:
        return _error(400, str(exc))
    _fan_out([wire])
    return _json({"id": event_id}, 202)


async def health(request: Request) -> Response:
    return _json({"status": "ok", "subscribers": len(_subscribers)}, 200)


app = Starlette(
    routes=[
        Route("/sse/events", events, methods=["GET"]),
        Route("/sse/publish", publish, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
    ]
)

"""Hypothesis against a real hypercorn server: random bytes, request lines, headers, query
strings and JSON bodies on every endpoint, over raw sockets (so nothing is cleaned up by a
client library on the way).

One server serves the whole module, in its own thread with its own trio loop, so the
examples share it exactly as real clients would. Rules checked on every answer:

* the app never answers 5xx, and every error it answers has a JSON body;
* hypercorn itself may refuse what is not HTTP/1.1 at all (before the app sees it) with an
  empty ``connection: close`` answer: 400, 431 (head too large) or, for a transfer coding
  it does not implement, 501 as RFC 9112 asks — never anything else;
* after each example ``/sse/stats`` adds up: ``events_published`` equals the events this
  module saw accepted, and ``active_connections`` is back to 0 once its streams closed;
* at the end the server is still up, healthy, and logged no error.
"""

from __future__ import annotations

import json
import logging
import queue
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_from_bytes

import attrs
import jwt
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import trio_sse
from trio_sse.settings import Settings

SECRET = "fuzz-secret-of-reasonable-length-0123456789"
TOKEN = jwt.encode(
    {"sub": "fuzzer", "exp": int(time.time()) + 3600, "sse": {"projects": ["*"], "publish": True, "admin": True}},
    SECRET,
    algorithm="HS256",
)
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
IO_TIMEOUT = 5.0
PROTOCOL_REFUSALS = {400, 431, 501}


@attrs.define
class Server:
    port: int
    thread: threading.Thread
    errors: list[logging.LogRecord]
    #: events the server answered 202 for, counted by this module
    accepted_events: int = 0


class _ErrorRecorder(logging.Handler):
    def __init__(self, errors: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.errors = errors

    def emit(self, record: logging.LogRecord) -> None:
        self.errors.append(record)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    config = Settings(
        host="127.0.0.1",
        port=0,
        log_level="warning",
        jwt_secret=SECRET,
        max_body_bytes=4096,
        max_event_bytes=512,
        connection_rate=1_000_000,
        client_connection_limit=1000,
        publish_rate=1_000_000,
    )
    started: queue.Queue[tuple[int, trio.lowlevel.TrioToken, trio.Event]] = queue.Queue()

    async def main() -> None:
        stop = trio.Event()
        async with trio_sse.open_hub(config) as hub, trio.open_nursery() as nursery:
            app = trio_sse.create_app(hub=hub)
            binds = await nursery.start(
                lambda task_status: trio_sse.serve(app, config, task_status=task_status, shutdown_trigger=stop.wait)
            )
            started.put((int(binds[0].rsplit(":", 1)[1]), trio.lowlevel.current_trio_token(), stop))
            await stop.wait()
            hub.begin_shutdown()

    errors: list[logging.LogRecord] = []
    recorder = _ErrorRecorder(errors)
    logging.getLogger().addHandler(recorder)
    thread = threading.Thread(target=trio.run, args=(main,), name="fuzzed-hypercorn", daemon=True)
    thread.start()
    port, token, stop = started.get(timeout=30)
    try:
        yield Server(port, thread, errors)
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(timeout=30)
        logging.getLogger().removeHandler(recorder)


# -- a raw HTTP/1.1 client ------------------------------------------------------------------


@attrs.frozen
class Answer:
    status: int | None  # None: the server closed without answering
    headers: dict[str, str]
    body: bytes
    bodiless: bool = False  # an answer to HEAD: the headers of an answer, no body
    cut: bool = False  # an answer the server ended early because we had hung up our side first

    def json(self) -> Any:
        return json.loads(self.body)


def _read_head(sock: socket.socket, buffer: bytes) -> tuple[bytes, bytes]:
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            return buffer, b""
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


def _read_chunked(sock: socket.socket, data: bytes, *, until: bytes | None = None) -> bytes:
    """The body of a chunked response; with ``until``, stop as soon as it contains that."""
    body = b""
    while True:
        while b"\r\n" not in data:
            data += sock.recv(65536) or _closed()
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        while len(data) < size + 2:
            data += sock.recv(65536) or _closed()
        body += data[:size]
        data = data[size + 2 :]
        if size == 0 or (until is not None and until in body):
            return body


def _closed() -> bytes:
    raise ConnectionError("closed mid-body")


def exchange(port: int, request: bytes, *, half_close: bool = False) -> Answer:
    """Send raw bytes; read one answer (a stream: up to its ``connected`` event, then hang up)."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as sock:
        sock.sendall(request)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        try:
            head, rest = _read_head(sock, b"")
        except ConnectionResetError:
            return Answer(None, {}, b"")
        if not head:
            return Answer(None, {}, b"")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        status = int(status_line.split(" ")[1])
        if request.startswith(b"HEAD ") or status in (204, 304):
            return Answer(status, headers, b"", bodiless=True)
        try:
            body = _read_body(sock, headers, rest)
        except (ConnectionError, OSError):
            if not half_close:
                raise
            # We shut our side down first: the server may take that for the client leaving
            # and end the answer early. Its head (status, content type) was still checked.
            return Answer(status, headers, b"", cut=True)
        return Answer(status, headers, body)


def _read_body(sock: socket.socket, headers: dict[str, str], rest: bytes) -> bytes:
    if headers.get("content-type", "").startswith("text/event-stream"):
        return _read_chunked(sock, rest, until=b"event: connected")
    if headers.get("transfer-encoding") == "chunked":
        return _read_chunked(sock, rest)
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        rest += sock.recv(65536) or _closed()
    return rest[:length]


def build(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes = b"") -> bytes:
    lines = [method + b" " + target + b" HTTP/1.1", b"host: 127.0.0.1", b"connection: close"]
    lines += [name + b": " + value for name, value in headers]
    if body:
        lines.append(b"content-length: " + str(len(body)).encode())
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


AUTH = (b"authorization", b"Bearer " + TOKEN.encode())


def stats(server: Server) -> dict[str, Any]:
    answer = exchange(server.port, build(b"GET", b"/sse/stats", []))
    assert answer.status == 200
    result: dict[str, Any] = answer.json()
    return result


def check_answer(server: Server, answer: Answer, *, protocol_refusal_allowed: bool = False) -> None:
    """The rules of the module docstring for one answer; counts accepted publishes."""
    if answer.status is None:
        assert protocol_refusal_allowed, "the server hung up without answering a valid request"
        return
    # The app answers every error with a JSON content type; hypercorn's own refusals have none.
    from_hypercorn = answer.status >= 400 and "content-type" not in answer.headers
    if from_hypercorn:
        assert protocol_refusal_allowed, answer
        assert answer.status in PROTOCOL_REFUSALS and answer.body == b"", answer
        assert answer.headers.get("connection") == "close", answer
        return
    assert answer.status < 500, answer
    if answer.status >= 400:
        assert answer.headers["content-type"].startswith("application/json"), answer
        if answer.bodiless or answer.cut:
            return
        error = answer.json()
        assert isinstance(error, dict) and isinstance(error.get("error"), str), answer
    elif answer.status == 202:
        accepted = answer.json()
        server.accepted_events += len(accepted["ids"]) if "ids" in accepted else 1


def check_stats_add_up(server: Server) -> None:
    """Published events match what was accepted; every stream we hung up on is gone."""
    deadline = time.monotonic() + IO_TIMEOUT
    while True:
        figures = stats(server)
        if figures["active_connections"] == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.01)  # the server's own loop unregisters a stream once it sees the hang-up
    assert figures["active_connections"] == 0
    assert figures["events_published"] == server.accepted_events
    assert figures["history"]["size"] == min(server.accepted_events, figures["history"]["capacity"])
    assert server.thread.is_alive()


# -- strategies -----------------------------------------------------------------------------

ENDPOINTS = [
    (b"GET", b"/sse/events"),
    (b"POST", b"/sse/publish"),
    (b"POST", b"/sse/subscribe"),
    (b"POST", b"/sse/test-event"),
    (b"GET", b"/sse/stats"),
    (b"GET", b"/sse/connections"),
    (b"GET", b"/sse/health"),
    (b"GET", b"/metrics"),
    (b"GET", b"/nowhere"),
    (b"OPTIONS", b"/sse/publish"),
]
METHODS = [b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"TRACE"]
HEADER_NAMES = [
    b"authorization",
    b"cookie",
    b"last-event-id",
    b"user-agent",
    b"origin",
    b"access-control-request-method",
    b"access-control-request-headers",
    b"x-forwarded-for",
    b"x-random",
    # framing headers last: the well-formed test leaves these three out
    b"content-type",
    b"content-length",
    b"transfer-encoding",
]
#: hypercorn's default h11_max_incomplete_size: a bigger head is refused with 431 before the app.
H11_MAX_HEAD = 16 * 1024


def is_field_value(value: bytes) -> bool:
    """Whether h11 lets ``value`` through as a header value (RFC 9110 field-value, no CTLs)."""
    return value == value.strip(b" \t") and all(b == 0x09 or 0x20 <= b != 0x7F for b in value)


header_values = (
    st.binary(max_size=60)
    | st.sampled_from(
        [b"Bearer " + TOKEN.encode(), b"Bearer", b"Bearer  ", b"sse_token=" + TOKEN.encode(), b"sse_token=\xff\x00"]
    )
    | st.sampled_from([b"chunked", b"gzip", b"-1", b"99999999999", b"\xc3\x28", b"a" * 9000])
)
random_headers = st.lists(st.tuples(st.sampled_from(HEADER_NAMES) | st.binary(min_size=1, max_size=12), header_values))
json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
TYPES = ["commit", "file_change", "system_status", "nope", "", "connected", "a" * 70]
event_like = st.fixed_dictionaries(
    {},
    optional={
        "event_type": st.sampled_from(TYPES) | json_values,
        "data": json_values,
        "project_id": st.none() | st.text(max_size=8) | st.integers(),
    },
)
bodies = st.one_of(
    event_like,
    st.fixed_dictionaries({"events": st.lists(event_like, max_size=4)}),
    st.fixed_dictionaries({"connection_id": st.text(max_size=8), "event_types": st.lists(st.sampled_from(TYPES))}),
    json_values,
    st.recursive(st.just([]), lambda inner: st.lists(inner, min_size=1, max_size=1), max_leaves=200),  # deep
).map(lambda value: json.dumps(value).encode()) | st.binary(max_size=300)
QUERY_NAMES = ["types", "project", "project_id", "last_event_id", "access_token", "limit", "offset", "x"]
query_strings = st.lists(
    st.tuples(st.sampled_from(QUERY_NAMES) | st.text(max_size=5), st.binary(max_size=30)),
    max_size=6,
).map(lambda pairs: "&".join(f"{quote_from_bytes(k.encode())}={quote_from_bytes(v)}" for k, v in pairs).encode())


# -- the tests ------------------------------------------------------------------------------


@FUZZ
@given(junk=st.binary(max_size=400))
def test_random_bytes_get_a_protocol_refusal_or_an_app_answer_never_a_crash(server: Server, junk: bytes) -> None:
    answer = exchange(server.port, junk + b"\r\n\r\n", half_close=True)
    check_answer(server, answer, protocol_refusal_allowed=True)
    check_stats_add_up(server)


@FUZZ
@given(
    method=st.sampled_from(METHODS) | st.binary(min_size=1, max_size=10),
    target=st.sampled_from([path for _, path in ENDPOINTS]) | st.binary(max_size=40),
    headers=random_headers,
    body=st.binary(max_size=100),
)
def test_random_request_lines_and_headers_on_every_endpoint(
    server: Server, method: bytes, target: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    answer = exchange(server.port, build(method, target, headers, body), half_close=True)
    check_answer(server, answer, protocol_refusal_allowed=True)
    check_stats_add_up(server)


@FUZZ
@given(endpoint=st.sampled_from(ENDPOINTS), query=query_strings, headers=random_headers)
def test_random_query_strings_and_headers_with_a_valid_token_on_every_endpoint(
    server: Server, endpoint: tuple[bytes, bytes], query: bytes, headers: list[tuple[bytes, bytes]]
) -> None:
    method, path = endpoint
    wellformed = [(name, value) for name, value in headers if name in HEADER_NAMES[:-3] and is_field_value(value)]
    answer = exchange(server.port, build(method, path + b"?" + query, [AUTH, *wellformed]))
    head_size = sum(len(name) + len(value) + 4 for name, value in wellformed)
    check_answer(server, answer, protocol_refusal_allowed=head_size > H11_MAX_HEAD)
    check_stats_add_up(server)


@FUZZ
@given(path=st.sampled_from([b"/sse/publish", b"/sse/subscribe", b"/sse/test-event"]), body=bodies)
def test_random_json_bodies_on_the_post_endpoints_publish_only_what_was_accepted(
    server: Server, path: bytes, body: bytes
) -> None:
    answer = exchange(server.port, build(b"POST", path, [AUTH, (b"content-type", b"application/json")], body))
    check_answer(server, answer)
    check_stats_add_up(server)


@pytest.mark.parametrize("path", [b"/sse/publish", b"/sse/subscribe", b"/sse/test-event"])
def test_json_nested_deeper_than_the_parser_allows_is_a_400_not_a_crash(server: Server, path: bytes) -> None:
    deep = b"[" * 2000 + b"]" * 2000  # within max_body_bytes, beyond orjson's 1024 levels
    answer = exchange(server.port, build(b"POST", path, [AUTH, (b"content-type", b"application/json")], deep))
    assert (answer.status, answer.json()["error"]) == (400, "invalid_json")
    check_stats_add_up(server)


def test_after_the_fuzzing_the_server_is_alive_healthy_and_logged_no_error(server: Server) -> None:
    assert server.thread.is_alive()
    health = exchange(server.port, build(b"GET", b"/sse/health", []))
    assert health.status == 200 and health.json()["status"] == "ok"
    stream = exchange(server.port, build(b"GET", b"/sse/events", [AUTH]))
    assert stream.status == 200 and b"event: connected" in stream.body
    check_stats_add_up(server)
    assert [record.getMessage() for record in server.errors if not hypercorn_send_race(record)] == []


def hypercorn_send_race(record: logging.LogRecord) -> bool:
    """A known hypercorn race, not a trio_sse error: when a request turns out malformed after
    its head was handed to the app, hypercorn's reader task answers 400 itself while the app
    answers the same request, and the app's ``send`` meets ``trio.BusyResourceError`` inside
    hypercorn. The client gets hypercorn's 400 and the server goes on (checked above)."""
    return record.exc_info is not None and isinstance(record.exc_info[1], trio.BusyResourceError)

"""Property tests of the publishers' rule book (``trio_sse.publisher._delivery``), sans-IO.

Whatever the server answers — any status, any body (the ids right or wrong, an
``index`` or garbage) — and whatever the transport raises, the plan for a batch:

* settles every event exactly once;
* never sends an event again after an answer that may mean it was stored
  (a 202, a 5xx other than 503, a transport error after the request could have
  reached the server): the rule that no event is published twice;
* sends an event again only after an answer that says the server stored none of
  the request (429, 503, a connection never opened, a 4xx);
* keeps the batch's order, in every request and across them (split halves in order);
* gives a caller an id only from a 202 that carries one id per event.
"""

from __future__ import annotations

from typing import Any

import httpx
import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from trio_sse.publisher import RESENDABLE_ERRORS, _delivery, _Send, _Sleep

REQUEST = httpx.Request("POST", "http://test/sse/publish")


class Item:
    def __init__(self, n: int) -> None:
        self.n = n
        self.body = orjson.dumps({"event_type": "commit", "data": n})
        self.settled: list[tuple[str | None, BaseException | None]] = []

    def settle(self, event_id: str | None, error: BaseException | None) -> None:
        self.settled.append((event_id, error))


_bodies = st.one_of(
    st.none(),
    st.just("ids-right"),
    st.lists(st.text(max_size=3), max_size=5).map(lambda ids: {"ids": ids}),
    st.integers(-2, 12).map(lambda i: {"error": "x", "message": "x", "index": i}),
    st.sampled_from([{"error": "x", "message": "x", "index": "1"}, {"error": "x", "message": "x"}, [1], "text"]),
)
_answers = st.one_of(
    st.tuples(st.sampled_from([202, 202, 400, 401, 403, 404, 413, 422, 429, 500, 502, 503, 504, 301]), _bodies),
    st.sampled_from(
        [
            *(httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.WriteTimeout),  # before sending
            *(httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError),  # maybe after
        ]
    ),
)


def respond(answer: Any, items: list[Any], given: dict[int, str]) -> httpx.Response | httpx.TransportError:
    """The scripted answer to a request for ``items``; ``given`` gets the ids a 202 hands out."""
    if isinstance(answer, type):
        return answer("scripted", request=REQUEST)
    status, body = answer
    if body == "ids-right":
        body = {"ids": [f"id-{item.n}" for item in items]}
    ids = body.get("ids") if isinstance(body, dict) else None
    if status == 202 and isinstance(ids, list) and len(ids) == len(items):
        given.update((item.n, event_id) for item, event_id in zip(items, ids, strict=True))
    content = b"" if body is None else orjson.dumps(body)
    return httpx.Response(status, content=content, headers={"Retry-After": "1"}, request=REQUEST)


def stored_nothing(answer: Any) -> bool:
    """Whether the answer proves the server stored none of the request."""
    if isinstance(answer, type):
        return issubclass(answer, RESENDABLE_ERRORS)
    status = answer[0]
    return status in (429, 503) or 400 <= status < 500


@settings(max_examples=300, deadline=None)
@given(size=st.integers(1, 10), answers=st.lists(_answers, max_size=25), max_attempts=st.integers(1, 4))
def test_every_event_settled_once_and_never_sent_again_after_it_may_be_stored(
    size: int, answers: list[Any], max_attempts: int
) -> None:
    items = [Item(n) for n in range(size)]
    plan = _delivery(list(items), "test", max_attempts, lambda failures, retry_after: 0.0)
    script = list(answers)
    maybe_stored: set[int] = set()
    given: dict[int, str] = {}
    stored_order: list[int] = []  # what may be stored, in the order it was sent
    result: Any = None
    sends = 0
    try:
        while True:
            step = plan.send(result)
            if isinstance(step, _Sleep):
                result = None
                continue
            assert isinstance(step, _Send)
            sends += 1
            assert sends < 10_000
            sent = [item.n for item in step.items]
            assert sent == sorted(sent)  # the batch's order
            assert not maybe_stored & set(sent), "sent again after it may have been stored"
            answer = script.pop(0) if script else (202, "ids-right")
            if not stored_nothing(answer):
                maybe_stored |= set(sent)
                stored_order += sent
            result = respond(answer, step.items, given)
    except StopIteration:
        pass
    assert stored_order == sorted(stored_order)  # across requests too: split halves go in order
    for item in items:
        assert len(item.settled) == 1, (item.n, item.settled)
        event_id, error = item.settled[0]
        assert (event_id is None) != (error is None)
        if event_id is not None:
            assert event_id == given[item.n]  # only from a 202 with one id per event, in order

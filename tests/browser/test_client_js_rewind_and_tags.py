"""client.js in Chromium: ``rewind`` on the first stream only, ``tags`` as stream filters.

The rewind's URL stays in the native EventSource, which reconnects to it by itself with
``Last-Event-ID``: the server's rule (no rewind with a last event id) is what keeps those
reconnects from rewinding again, and this checks it with the browser's own reconnect.
"""

from __future__ import annotations

from typing import Any

import httpx
from browser_support import ServerThread, StaticServer, wait_for, wait_in_page

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>client.js rewind and tags</title>
<script src="{api}/sse/client.js"></script>
<script>
  window.received = [];
  window.sse = TrioSSE.connect("{api}/sse/events", {options});
  sse.on("*", (data, event) => received.push([event.id, data]));
</script>
"""


def publish(server: ServerThread, data: Any, tags: dict[str, str] | None = None) -> str:
    body: dict[str, Any] = {"event_type": "commit", "data": data, **({"tags": tags} if tags else {})}
    reply = httpx.post(f"{server.base_url}/sse/publish", json=body, timeout=5)
    assert reply.status_code == 202, reply.text
    event_id: str = reply.json()["id"]
    return event_id


def open_page(context: Any, static_server: StaticServer, server: ServerThread, options: str) -> Any:
    static_server.pages["/page.html"] = PAGE.format(api=server.base_url, options=options)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(f"{static_server.base_url}/page.html")
    wait_in_page(page, "sse.connectionId !== null")
    return page


def streams(server: ServerThread) -> list[dict[str, Any]]:
    connections: list[dict[str, Any]] = server.get("/sse/connections")["connections"]
    return connections


def test_rewind_on_the_first_stream_then_the_browsers_own_reconnect_resumes_without_rewinding(
    context, server_factory, static_server: StaticServer
) -> None:
    server = server_factory(retry=200)
    ids = [publish(server, n) for n in range(5)]
    page = open_page(context, static_server, server, '{types: ["commit"], rewind: 2, share: false}')
    wait_in_page(page, "received.length >= 2")
    assert page.evaluate("received") == [[ids[3], 3], [ids[4], 4]]
    assert "rewind=2" in page.evaluate("sse._source.url")  # what the browser reconnects to
    live = publish(server, 5)
    wait_in_page(page, "received.length >= 3")

    (first,) = streams(server)
    server.call_soon(lambda hub: hub.get_connection(first["connection_id"]).close("slow_consumer"))
    wait_for(lambda: server.get("/sse/stats")["active_connections"] == 0, what="the dropped stream to end")
    away = publish(server, 6)  # while the browser is away: only its resume can bring it
    second = wait_for(
        lambda: (s := streams(server)) and s[0]["connection_id"] != first["connection_id"] and s[0],
        what="the browser's own reconnect",
    )
    assert page.evaluate("sse._source") is not None and page.evaluate("sse.reopens") == 0  # native, not reopened
    wait_in_page(page, f"sse.connectionId === {second['connection_id']!r}")
    after = publish(server, 7)
    wait_in_page(page, "received.length >= 5")
    # Every event once, in order: the reconnect resumed after `live`, it did not rewind 3 and 4 again.
    assert page.evaluate("received") == [[ids[3], 3], [ids[4], 4], [live, 5], [away, 6], [after, 7]]
    # And the server sent it only those two (client.js drops duplicates by id: count at the source).
    assert wait_for(lambda: (s := streams(server)) and s[0]["events_sent"] == 2 and s, what="two events sent")
    assert page.errors == []


def test_tags_filter_the_stream_and_subscribe_changes_them(
    context, server_factory, static_server: StaticServer
) -> None:
    server = server_factory()
    page = open_page(context, static_server, server, '{types: ["commit"], tags: {env: ["prod"]}, share: false}')
    (stream,) = streams(server)
    assert stream["tags"] == {"env": ["prod"]}
    prod = publish(server, "p1", {"env": "prod"})
    publish(server, "d1", {"env": "dev"})  # outside the filter
    publish(server, "none")  # no tag: outside it too
    wait_in_page(page, "received.length >= 1")
    answer = page.evaluate("sse.subscribe(['commit'], {tags: {env: ['dev']}, rewind: 1})")
    assert answer["tags"] == {"env": ["dev"]}
    wait_in_page(page, "sse.filters.tags && sse.filters.tags.env[0] === 'dev'")
    dev = publish(server, "d2", {"env": "dev"})
    publish(server, "p2", {"env": "prod"})  # no longer wanted
    wait_in_page(page, "received.length >= 3")
    # The subscribe's rewind brought d1 (the newest dev event it was not sent), then live d2.
    received = page.evaluate("received")
    assert [data for _, data in received] == ["p1", "d1", "d2"]
    assert received[0][0] == prod and received[2][0] == dev
    assert page.evaluate("sse.filters") == {"types": ["commit"], "project": None, "tags": {"env": ["dev"]}}
    assert page.errors == []

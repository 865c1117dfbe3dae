"""Streams from a page of ANOTHER origin, across a server restart on the same port.

Native EventSource: CORS lets it read the stream, and the browser reconnects by itself
when the server comes back. client.js: after such a reconnect the URL's filters are
back, so it re-applies the filters changed since through ``POST /sse/subscribe``; and
when the browser gives up (a non-200 answer), client.js opens a new stream itself.
"""

from __future__ import annotations

from browser_support import ServerThread, StaticServer, wait_for, wait_in_page

NATIVE_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>native EventSource, other origin</title>
<script>
  window.received = [];
  window.opens = 0;
  const source = new EventSource("{api}/sse/events?types=commit");
  source.addEventListener("open", () => {{ opens += 1; }});
  source.addEventListener("commit", (e) => received.push([e.lastEventId, JSON.parse(e.data)]));
</script>
"""

CLIENT_PAGE = """<!doctype html>
<meta charset="utf-8">
<script src="{api}/sse/client.js"></script>
<script>
  window.received = [];
  window.opens = 0;
  window.sse = TrioSSE.connect("{api}/sse/events", {{types: ["commit"]}});
  sse.on("*", (data, event) => received.push([event.type, data]));
  sse.on("open", () => {{ opens += 1; }});
</script>
"""


def test_native_eventsource_from_another_origin_survives_a_server_restart(
    context, server_factory, static_server: StaticServer
) -> None:
    server = server_factory(retry=300)
    static_server.pages["/native.html"] = NATIVE_PAGE.format(api=server.base_url)
    page = context.new_page()
    page.goto(f"{static_server.base_url}/native.html")
    assert static_server.base_url != server.base_url
    wait_in_page(page, "opens === 1")
    wait_for(lambda: server.get("/sse/stats")["active_connections"] == 1, what="the page's stream")
    before = [server.publish("commit", {"n": n}) for n in range(3)]
    wait_in_page(page, "received.length === 3")
    assert [event_id for event_id, _ in page.evaluate("received")] == before

    port = server.port
    server.stop()  # ends the stream cleanly; the browser starts retrying every 300 ms
    server.start()  # a new process, as far as the page can tell, on the same port
    assert server.port == port
    wait_in_page(page, "opens === 2")
    wait_for(lambda: server.get("/sse/stats")["active_connections"] == 1, what="the reconnected stream")
    after = [server.publish("commit", {"n": n}) for n in range(3, 5)]
    wait_in_page(page, "received.length === 5")
    assert page.evaluate("received.map(r => r[1].n)") == [0, 1, 2, 3, 4]
    assert [event_id for event_id, _ in page.evaluate("received")][3:] == after


def test_client_js_reapplies_changed_filters_after_a_native_reconnect(
    context, server_factory, static_server: StaticServer
) -> None:
    # The browser retries after 1.5 s, when the old server (0.3 s grace) is long gone:
    # the native reconnect reaches the new one and opens with the URL's filters.
    server = server_factory(retry=1500, shutdown_grace=0.3)
    static_server.pages["/client.html"] = CLIENT_PAGE.format(api=server.base_url)
    page = context.new_page()
    page.goto(f"{static_server.base_url}/client.html")
    wait_in_page(page, "sse.connectionId !== null")
    page.evaluate("sse.subscribe(['risk_alert'])")
    server.stop()
    server.start()
    wait_in_page(page, "opens === 2")
    # The reconnected stream opened with ?types=commit; client.js moved it back to risk_alert.
    wait_for(lambda: event_types_of_the_one_stream(server) == ["risk_alert"], what="the filters re-applied")
    assert page.evaluate("sse.reopens") == 0  # the browser's own reconnect, not a new EventSource
    server.publish("commit", {"n": 0})
    server.publish("risk_alert", {"level": "high"})
    wait_in_page(page, "received.length >= 1")
    assert page.evaluate("received") == [["risk_alert", {"level": "high"}]]


def test_client_js_opens_a_new_stream_when_the_browser_gives_up(
    context, server_factory, static_server: StaticServer
) -> None:
    # A stream refused with 503 (the instance is shutting down) makes a native
    # EventSource give up for good; client.js opens a new one after a delay.
    server = server_factory(retry=200)
    static_server.pages["/client.html"] = CLIENT_PAGE.format(api=server.base_url).replace(
        '{types: ["commit"]}', '{types: ["commit"], reopenDelay: 300}'
    )
    page = context.new_page()
    page.goto(f"{static_server.base_url}/client.html")
    wait_in_page(page, "sse.connectionId !== null")
    page.evaluate("sse.subscribe(['risk_alert'])")
    server.call_soon(lambda hub: hub.begin_shutdown())  # ends the stream; reconnects get 503
    wait_in_page(page, "sse.reopens >= 1")
    server.stop()
    server.start()
    wait_in_page(page, "opens === 2")
    # The new EventSource opens with the current filters (and the last id seen).
    wait_for(lambda: event_types_of_the_one_stream(server) == ["risk_alert"], what="a stream with the new filters")
    server.publish("commit", {"n": 0})
    server.publish("risk_alert", {"level": "low"})
    wait_in_page(page, "received.length >= 1")
    assert page.evaluate("received") == [["risk_alert", {"level": "low"}]]


def event_types_of_the_one_stream(server: ServerThread) -> list[str] | None:
    listing = server.get("/sse/connections")
    return listing["connections"][0]["event_types"] if listing["total"] == 1 else None

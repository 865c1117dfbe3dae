"""Chromium's native EventSource on a ``compression = zstd`` server (issue 13, item 5).

Chromium lists ``zstd`` in the Accept-Encoding of the stream's request, so the stream comes
back ``Content-Encoding: zstd``, and the page sees each event decoded as soon as it is
published: every write ends a zstd block, nothing waits in the compressor.
"""

from __future__ import annotations

from typing import Any

from browser_support import StaticServer, wait_for, wait_in_page

NATIVE_PAGE = """<!doctype html>
<meta charset="utf-8">
<title>native EventSource, zstd</title>
<script>
  window.received = [];
  const source = new EventSource("{api}/sse/events?types=commit");
  source.addEventListener("commit", (e) => received.push([e.lastEventId, JSON.parse(e.data)]));
</script>
"""


def test_native_eventsource_receives_a_zstd_stream_decoded_event_by_event(
    context, server_factory, static_server: StaticServer
) -> None:
    server = server_factory(compression="zstd")
    static_server.pages["/zstd.html"] = NATIVE_PAGE.format(api=server.base_url)
    page = context.new_page()
    with page.expect_response(lambda response: "/sse/events" in response.url) as stream_response:
        page.goto(f"{static_server.base_url}/zstd.html")
    response: Any = stream_response.value
    assert "zstd" in response.request.all_headers().get("accept-encoding", "")
    assert response.all_headers().get("content-encoding") == "zstd"
    wait_for(lambda: server.get("/sse/stats")["active_connections"] == 1, what="the page's stream")
    published = []
    for n in range(3):
        published.append(server.publish("commit", {"n": n}))
        # One at a time: each event reaches the page before the next is published.
        wait_in_page(page, f"received.length === {n + 1}")
    assert page.evaluate("received") == [[event_id, {"n": n}] for n, event_id in enumerate(published)]

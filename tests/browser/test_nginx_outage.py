"""A native EventSource behind nginx survives a trio_sse outage longer than ``retry``.

Chromium opens a plain ``EventSource`` on nginx (the site file of docs/running.md,
served on 127.0.0.1) in front of trio_sse. trio_sse then goes away for 4 s while the
page retries every 0.5 s: nginx would answer those reconnections with 502, and an
EventSource that gets an error status closes for good. With the documented
``error_page ... = @sse_down`` (``return 444``) it sees a network error instead, keeps
retrying, is back OPEN by itself once trio_sse is, and resumes with its Last-Event-ID.

So that "no loss" can be checked, the hub outlives its HTTP server (:class:`Upstream`):
while "down", nothing listens on the upstream port, exactly as nginx sees a crashed or
redeploying instance, but the events published meanwhile stay in the history, and the
page must receive them (by replay) and the ones published after the restart.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Self

import pytest
import trio
from browser_support import WAIT_MS, StaticServer, TrioThread, wait_for, wait_in_page
from nginx_support import Nginx, docs_nginx_blocks, local_site, with_tls, wrap_site
from redis_server import free_port

import trio_sse
from trio_sse.runtime.hub import Hub
from trio_sse.settings import Settings

RETRY_MS = 500
OUTAGE_S = 4.0

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>native EventSource through nginx</title>
<script>
  window.received = [];
  window.opens = 0;
  window.errors = 0;
  window.closedForGood = false;
  const source = new EventSource("{nginx}/sse/events?types=commit");
  source.addEventListener("open", () => {{ opens += 1; }});
  source.addEventListener("error", () => {{
    errors += 1;
    if (source.readyState === EventSource.CLOSED) closedForGood = true;
  }});
  source.addEventListener("commit", (e) => received.push([e.lastEventId, JSON.parse(e.data).n]));
  window.state = () => source.readyState;
</script>
"""


class Upstream(TrioThread):
    """trio_sse whose hub outlives its HTTP server: :meth:`down` closes the listening
    socket and cuts every stream; :meth:`up` serves the same hub on the same port again."""

    what = "upstream"

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self.settings = Settings(host="127.0.0.1", port=free_port(), log_level="warning", **settings)
        self.port = self.settings.port
        self.hub: Hub | None = None
        self._nursery: trio.Nursery | None = None
        self._stop: trio.Event | None = None
        self._stopped: trio.Event | None = None

    def start(self) -> Self:
        super().start()
        self.up()
        return self

    async def _main(self, ready: Callable[[], None], quit: trio.Event) -> None:
        async with trio_sse.open_hub(self.settings) as hub, trio.open_nursery() as nursery:
            self.hub, self._nursery = hub, nursery
            ready()
            await quit.wait()
            await self._down()
            hub.begin_shutdown()

    async def _serve(self, stop: trio.Event, stopped: trio.Event, *, task_status: Any) -> None:
        assert self.hub is not None
        try:
            # A fresh app each time: the hub is what must survive, not the Quart app.
            app = trio_sse.create_app(hub=self.hub)
            await trio_sse.serve(app, self.settings, shutdown_trigger=stop.wait, task_status=task_status)
        finally:
            stopped.set()

    async def _up(self) -> None:
        assert self._nursery is not None
        self._stop, self._stopped = trio.Event(), trio.Event()
        await self._nursery.start(functools.partial(self._serve, self._stop, self._stopped))

    async def _down(self) -> None:
        if self._stop is None or self._stopped is None:
            return
        assert self.hub is not None
        self._stop.set()  # hypercorn closes its listening socket first
        for connection in self.hub.connections():
            connection.close("server_shutdown")  # cut, as a crash would
        with trio.fail_after(10):
            await self._stopped.wait()
        self._stop = self._stopped = None

    def _run(self, fn: Any, *args: Any) -> Any:
        assert self._token is not None
        return trio.from_thread.run(fn, *args, trio_token=self._token)

    def up(self) -> None:
        self._run(self._up)

    def down(self) -> None:
        self._run(self._down)

    def publish(self, n: int) -> str:
        assert self.hub is not None
        event_id: str = self._run(self.hub.publish, "commit", {"n": n})
        return event_id

    def streams(self) -> int:
        hub, token = self.hub, self._token
        assert hub is not None and token is not None
        count: int = trio.from_thread.run_sync(lambda: len(hub.connections()), trio_token=token)
        return count


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(retry=RETRY_MS, shutdown_grace=0.5).start()
    yield server
    server.stop()


@pytest.fixture(params=["http", "https-h2"])
def nginx(request: pytest.FixtureRequest, tmp_path: Path, upstream: Upstream) -> Iterator[Nginx]:
    """nginx with docs/running.md's site file, on a free port, in front of ``upstream``:
    as written (plain HTTP/1.1), and with the page's TLS lines (HTTPS and HTTP/2, where
    444 resets the browser's stream rather than closing a TCP connection)."""
    listen = free_port()
    blocks = docs_nginx_blocks()
    site = blocks["site"] if request.param == "http" else with_tls(blocks, tmp_path)
    server = Nginx(tmp_path, wrap_site(tmp_path, local_site(site, listen, upstream.port)))
    server.start(listen)
    if request.param != "http":
        server.base_url = server.base_url.replace("http://", "https://")
    yield server
    server.stop()


def test_native_eventsource_through_nginx_resumes_after_a_4_s_outage_without_loss(
    browser: Any, upstream: Upstream, nginx: Nginx, static_server: StaticServer
) -> None:
    static_server.pages["/page.html"] = PAGE.format(nginx=nginx.base_url)
    # The test's own CA is not the browser's: accept its certificate (https-h2).
    context = browser.new_context(ignore_https_errors=True)
    context.set_default_timeout(WAIT_MS)
    try:
        check_outage(context.new_page(), upstream, nginx, static_server)
    finally:
        context.close()


def check_outage(page: Any, upstream: Upstream, nginx: Nginx, static_server: StaticServer) -> None:
    page.goto(f"{static_server.base_url}/page.html")
    wait_in_page(page, "opens === 1 && state() === EventSource.OPEN")
    wait_for(lambda: upstream.streams() == 1, what="the page's stream through nginx")
    published = [upstream.publish(n) for n in range(3)]
    wait_in_page(page, "received.length === 3")

    upstream.down()
    outage_ends = time.monotonic() + OUTAGE_S
    # Published while down: the page can only get these by replay after its Last-Event-ID.
    published += [upstream.publish(n) for n in range(3, 6)]
    while time.monotonic() < outage_ends:
        assert not page.evaluate("closedForGood"), (
            "the EventSource closed for good: nginx answered with an error status"
        )
        time.sleep(0.1)
    # Several reconnections were tried (and refused as a network error) during the outage.
    assert page.evaluate("errors") >= 1 + int(OUTAGE_S * 1000 / RETRY_MS) // 2
    assert page.evaluate("state()") == 0  # CONNECTING: still retrying by itself
    assert page.evaluate("received.length") == 3
    # nginx closed those reconnections without an answer (444) rather than answering 502.
    protocol = "HTTP/2.0" if nginx.base_url.startswith("https") else "HTTP/1.1"
    assert nginx.access_log().count(f'"GET /sse/events?types=commit {protocol}" 444 ') >= 2, nginx.access_log()

    upstream.up()
    published += [upstream.publish(n) for n in range(6, 8)]  # before the page is back
    wait_in_page(page, "opens === 2 && state() === EventSource.OPEN")
    wait_for(lambda: upstream.streams() == 1, what="the reconnected stream")
    published += [upstream.publish(n) for n in range(8, 10)]  # live again
    wait_in_page(page, "received.length >= 10")
    received = page.evaluate("received")
    assert [n for _, n in received] == list(range(10)), received  # each once, in order
    assert [event_id for event_id, _ in received] == published
    assert not page.evaluate("closedForGood")

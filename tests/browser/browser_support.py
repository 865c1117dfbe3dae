"""Helpers of the browser tests: the servers they talk to and condition waits.

Real Chromium against a real hypercorn, for the browser-side features.

Playwright's sync API runs in plain ``def`` tests (pytest-trio leaves those alone), so
the servers run elsewhere: the trio_sse app in a thread of its own with its own
``trio.run`` (it can be stopped and started again on the same port), and pages of a
second origin on a tiny ``http.server`` in another thread. Every wait is on a
condition with a timeout, never a bare sleep.

Chromium is the Debian one (``/usr/bin/chromium``, or ``TRIO_SSE_CHROMIUM``); when it
is missing these tests fail and say so — CI installs it, a silent skip would hide
that the browser features went untested.
"""

from __future__ import annotations

import functools
import os
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

import httpx
import trio

import trio_sse
from trio_sse.runtime.hub import Hub
from trio_sse.settings import Settings

CHROMIUM = os.environ.get("TRIO_SSE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Playwright's timeout for each wait, in ms.
WAIT_MS = 10_000


class TrioThread:
    """A trio loop of its own in a daemon thread, for the plain ``def`` tests to drive.

    A subclass writes :meth:`_main`: it sets things up, calls ``ready()`` and runs until
    ``quit`` is set. :meth:`start` returns once ``ready()`` was called; :meth:`stop` sets
    ``quit`` and joins the thread. An exception in the loop is raised by whichever of the
    two comes next, in the test's thread, rather than dying unseen in the other one.
    """

    #: Named in the thread's name and in the errors.
    what = "trio loop"

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._quit: trio.Event | None = None
        self._error: BaseException | None = None

    def start(self) -> Self:
        ready = threading.Event()

        def main() -> None:
            try:
                trio.run(self._in_trio, ready)
            except BaseException as exc:  # reported by start()/stop() in the test's thread
                self._error = exc
                ready.set()

        self._thread = threading.Thread(target=main, name=f"trio_sse-{self.what}", daemon=True)
        self._thread.start()
        if not ready.wait(15) or self._error is not None:
            raise RuntimeError(f"the {self.what} did not start: {self._error!r}")
        return self

    async def _in_trio(self, ready: threading.Event) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._quit = trio.Event()
        await self._main(ready.set, self._quit)

    async def _main(self, ready: Callable[[], None], quit: trio.Event) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        if self._thread is None or self._token is None or self._quit is None:
            return
        trio.from_thread.run_sync(self._quit.set, trio_token=self._token)
        self._thread.join(15)
        alive = self._thread.is_alive()
        self._thread = None
        if alive:
            raise RuntimeError(f"the {self.what} thread did not stop")
        if self._error is not None:
            raise self._error


class ServerThread(TrioThread):
    """The trio_sse app under hypercorn, in a thread with its own trio loop.

    ``stop()`` then ``start()`` again restarts it on the same port with a fresh hub,
    like a redeploy: streams end cleanly and clients reconnect by themselves.
    """

    what = "server"

    def __init__(self, **settings: Any) -> None:
        super().__init__()
        self.settings = {"shutdown_grace": 2, "log_level": "warning", **settings}
        self.port = 0
        self.base_url = ""
        self.hub: Hub | None = None

    async def _main(self, ready: Callable[[], None], quit: trio.Event) -> None:
        config = Settings(host="127.0.0.1", port=self.port, **self.settings)
        async with trio.open_nursery() as nursery, trio_sse.open_hub(config) as hub:
            app = trio_sse.create_app(hub=hub)
            serve = functools.partial(trio_sse.serve, app, config, shutdown_trigger=quit.wait)
            binds = await nursery.start(serve)
            self.base_url = binds[0]
            self.port = int(self.base_url.rsplit(":", 1)[1])
            self.hub = hub
            ready()
            await quit.wait()
            hub.begin_shutdown()

    # -- talking to it from the test's thread ------------------------------------------

    def call_soon(self, fn: Callable[[Hub], Any]) -> Any:
        """Run ``fn(hub)`` in the server's trio thread and return its result."""
        assert self.hub is not None and self._token is not None
        hub = self.hub
        return trio.from_thread.run_sync(lambda: fn(hub), trio_token=self._token)

    def publish(self, event_type: str, data: Any) -> str:
        reply = httpx.post(f"{self.base_url}/sse/publish", json={"event_type": event_type, "data": data}, timeout=5)
        assert reply.status_code == 202, reply.text
        event_id: str = reply.json()["id"]
        return event_id

    def get(self, path: str) -> Any:
        reply = httpx.get(f"{self.base_url}{path}", timeout=5)
        assert reply.status_code == 200, reply.text
        return reply.json()


class StaticServer:
    """Pages of another origin: ``pages[path] = html``, served by ``http.server``."""

    def __init__(self) -> None:
        self.pages: dict[str, str] = {}
        pages = self.pages

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = pages.get(self.path.split("?", 1)[0])
                if body is None:
                    self.send_error(404)
                    return
                data = body.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._httpd.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="static-server", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)


def wait_for(condition: Callable[[], Any], timeout: float = WAIT_MS / 1000, what: str = "condition") -> Any:
    """Poll a server-side condition from the test thread (the browser has its own waits)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def wait_in_page(page: Any, expression: str, timeout: float = WAIT_MS / 1000) -> Any:
    """Wait until a JavaScript expression is truthy in ``page``.

    Polled with ``page.evaluate`` rather than ``page.wait_for_function``: the latter
    compiles its predicate with ``eval``, which the dashboard's CSP rightly forbids.
    """
    return wait_for(lambda: page.evaluate(expression), timeout, what=expression)

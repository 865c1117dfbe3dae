"""Fixtures of the browser tests: one Chromium per session, servers per test.

See ``browser_support.py`` for why the servers run in threads. When Chromium is
missing these tests fail and say so (CI installs it): a silent skip would hide that
the browser features went untested.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from browser_support import CHROMIUM, CHROMIUM_ARGS, WAIT_MS, ServerThread, StaticServer


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.fail(
            f"Chromium not found at {CHROMIUM}: install it (Debian: apt-get install chromium) "
            "or point TRIO_SSE_CHROMIUM at a Chromium binary",
            pytrace=False,
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def context(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(WAIT_MS)
    try:
        yield context
    finally:
        context.close()


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ServerThread]]:
    servers: list[ServerThread] = []

    def make(**settings: Any) -> ServerThread:
        server = ServerThread(**settings).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def static_server() -> Iterator[StaticServer]:
    server = StaticServer()
    yield server
    server.close()

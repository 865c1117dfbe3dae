"""Shared fixtures: a hub, an in-process client, and a real hypercorn server on 127.0.0.1."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trustme

import trio_sse
from trio_sse.runtime.hub import Hub
from trio_sse.settings import Settings
from trio_sse.testing import SSETestClient


@attrs.frozen
class LiveServer:
    base_url: str
    hub: Hub
    settings: Settings


@asynccontextmanager
async def open_client(**settings: Any) -> AsyncIterator[tuple[Hub, SSETestClient]]:
    """A hub with ``settings`` and an in-process client of its app."""
    async with trio_sse.open_hub(Settings(**settings)) as hub:
        async with SSETestClient(trio_sse.create_app(hub=hub)) as client:
            yield hub, client


@asynccontextmanager
async def run_live_server(**settings: Any) -> AsyncIterator[LiveServer]:
    """A real hypercorn (trio worker) serving a hub on a free port of 127.0.0.1."""
    config = Settings(**{"host": "127.0.0.1", "port": 0, "log_level": "warning", **settings})
    async with trio.open_nursery() as nursery:
        async with trio_sse.open_hub(config) as hub:
            app = trio_sse.create_app(hub=hub)
            stop = trio.Event()
            binds = await nursery.start(
                lambda task_status: trio_sse.serve(app, config, task_status=task_status, shutdown_trigger=stop.wait)
            )
            try:
                yield LiveServer(binds[0], hub, config)
            finally:
                hub.begin_shutdown()
                stop.set()


@attrs.frozen
class TlsFiles:
    certfile: str
    keyfile: str
    client_context: ssl.SSLContext


def issue_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA, a certificate for 127.0.0.1 in PEM files, and a client context trusting the CA."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    for index, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(certfile), append=index > 0)
    cert.private_key_pem.write_to_path(str(keyfile))
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return TlsFiles(str(certfile), str(keyfile), context)


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    """PEM files for ``certfile``/``keyfile`` (trustme, valid for 127.0.0.1) and a client context trusting them."""
    return issue_tls_files(tmp_path)


@pytest.fixture
async def hub() -> AsyncIterator[Hub]:
    async with trio_sse.open_hub(Settings()) as hub:
        yield hub


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[SSETestClient]:
    async with SSETestClient(trio_sse.create_app(hub=hub)) as client:
        yield client


@pytest.fixture
def client_factory() -> Callable[..., Any]:
    """``async with client_factory(heartbeat_interval=5) as (hub, client): ...``"""
    return open_client


@pytest.fixture
def live_server_factory() -> Callable[..., Any]:
    """``async with live_server_factory(queue_size=10) as server: server.base_url ...``"""
    return run_live_server

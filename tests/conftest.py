"""Shared fixtures: a hub, an in-process client, and a real hypercorn server on 127.0.0.1."""

from __future__ import annotations

import ssl
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trustme
from redis_server import RedisServer

import trio_sse
from trio_sse.runtime.hub import Hub
from trio_sse.settings import Settings
from trio_sse.testing import SSETestClient


@attrs.frozen
class LiveServer:
    base_url: str
    hub: Hub
    settings: Settings


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests that use the ``backend`` fixture (through ``hub``, ``client`` or the factories) run
    against both backends — except under ``autojump_clock``, whose virtual time races
    ahead while a test waits on a real Redis socket, and tests marked ``one_backend``.
    Those run once, on the memory backend unless they choose otherwise."""
    if "backend" not in metafunc.fixturenames or metafunc.definition.get_closest_marker("one_backend"):
        return
    kinds = ["memory"] if "autojump_clock" in metafunc.fixturenames else ["memory", "redis"]
    metafunc.parametrize("backend", kinds, indirect=True)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One real redis-server for the session (each test uses its own stream key)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings selecting the backend under test: ``memory``, or Redis with a fresh stream key."""
    if getattr(request, "param", "memory") == "memory":
        return {"backend": "memory"}
    server: RedisServer = request.getfixturevalue("redis_server")
    return {"backend": server.url, "redis_stream": f"test:{uuid.uuid4().hex}"}


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
async def hub(backend: dict[str, Any]) -> AsyncIterator[Hub]:
    async with trio_sse.open_hub(Settings(**backend)) as hub:
        yield hub


@pytest.fixture
async def client(hub: Hub) -> AsyncIterator[SSETestClient]:
    async with SSETestClient(trio_sse.create_app(hub=hub)) as client:
        yield client


@pytest.fixture
def client_factory(backend: dict[str, Any]) -> Callable[..., Any]:
    """``async with client_factory(heartbeat_interval=5) as (hub, client): ...`` on the backend under test."""

    def factory(**settings: Any) -> Any:
        return open_client(**{**backend, **settings})

    return factory


@pytest.fixture
def live_server_factory(backend: dict[str, Any]) -> Callable[..., Any]:
    """``async with live_server_factory(queue_size=10) as server: server.base_url ...`` on the backend under test."""

    def factory(**settings: Any) -> Any:
        return run_live_server(**{**backend, **settings})

    return factory

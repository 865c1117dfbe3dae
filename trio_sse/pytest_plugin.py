"""pytest fixtures for testing code that uses trio_sse: ``sse_settings``, ``sse_hub``, ``sse_app``, ``sse_client``,
and ``sse_test_client`` for any ASGI app's event streams (FastAPI, Starlette, Litestar, Quart), with no hub.

pytest loads this module by itself in every project where trio_sse is installed (the
``pytest11`` entry point ``trio_sse``), so a test only names the fixture it wants::

    async def test_progress_reaches_the_stream(sse_client, autojump_clock):
        async with sse_client.stream(types="progress_update") as stream:
            await stream.expect_event("connected")
            await sse_client.publish("progress_update", {"progress": 75})
            await stream.expect_event("progress_update", {"progress": 75})

The async fixtures are trio fixtures: they need pytest-trio, with ``trio_mode = true``
or the test marked ``@pytest.mark.trio``. They run in the test's own trio run, so they
share its clock — ``autojump_clock`` skips the hub's heartbeats and timeouts too.

Because it is loaded into every pytest run wherever trio_sse is installed, it must
stay inert until a fixture is used: no hooks beyond registering its marker, no hub
or app made at import. (Importing it does import the ``trio_sse`` package, and with
it quart and hypercorn: about 0.3 s at pytest startup.)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from .runtime.hub import Hub
    from .settings import Settings
    from .testing import SSETestClient

__all__ = ["sse_app", "sse_client", "sse_hub", "sse_settings", "sse_test_client"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "sse_settings(**overrides): settings for this test's sse_hub (trio_sse.Settings field names and values)",
    )


@pytest.fixture
def sse_settings(request: pytest.FixtureRequest) -> Settings:
    """The settings of ``sse_hub``: :func:`trio_sse.testing.settings_for_tests`.

    Per test: ``@pytest.mark.sse_settings(heartbeat_interval=5)`` (the closest marker
    wins, so a class or module can set defaults with ``pytestmark``). For a whole
    directory or module: define your own ``sse_settings`` fixture returning a
    ``Settings`` — pytest's fixture overriding makes ``sse_hub`` use it.
    """
    marker = request.node.get_closest_marker("sse_settings")
    if marker is not None and marker.args:
        raise TypeError("@pytest.mark.sse_settings takes keyword arguments only (Settings field names)")
    from .testing import settings_for_tests

    return settings_for_tests(**(marker.kwargs if marker is not None else {}))


@pytest.fixture
async def sse_hub(sse_settings: Settings) -> AsyncIterator[Hub]:
    """An open hub for the test's duration, built from ``sse_settings``.

    Its teardown is leaving :func:`trio_sse.open_hub`: every stream still open is ended
    and every hub task stopped before the next test starts.
    """
    from . import open_hub

    async with open_hub(sse_settings) as hub:
        yield hub


@pytest.fixture
def sse_app(sse_hub: Hub) -> Any:
    """The ASGI app ``sse_client`` talks to: ``trio_sse.create_app(hub=sse_hub)``.

    Override it to test your own app: a QuartTrio app with ``trio_sse.blueprint(sse_hub)``
    registered, for instance (then also override ``sse_client`` if it is mounted under
    a prefix, passing ``prefix=``).
    """
    from . import create_app

    return create_app(hub=sse_hub)


@pytest.fixture
async def sse_client(sse_app: Any) -> AsyncIterator[SSETestClient]:
    """An in-process :class:`trio_sse.testing.SSETestClient` for ``sse_app``.

    Its streams are disconnected when the test ends, before the hub closes.
    """
    from .testing import SSETestClient

    async with SSETestClient(sse_app) as client:
        yield client


@pytest.fixture
async def sse_test_client() -> AsyncIterator[Callable[..., Awaitable[SSETestClient]]]:
    """Opens an :class:`trio_sse.testing.SSETestClient` for any ASGI app: ``client = await sse_test_client(app)``.

    No hub is involved, so this is the fixture for apps of other frameworks. Keyword
    arguments go to ``SSETestClient``. Each client runs the app's lifespan startup when
    opened and its shutdown when the test ends (streams still open are disconnected
    first). The clients live in this fixture's nursery, so an exception the app raises
    fails the test — pytest-trio cancels it and reports the error — rather than hanging it.
    """
    import trio

    from .testing import SSETestClient

    done = trio.Event()
    async with trio.open_nursery() as nursery:

        async def open_client(app: Any, **options: Any) -> SSETestClient:
            async def hold(task_status: trio.TaskStatus[SSETestClient]) -> None:
                async with SSETestClient(app, **options) as client:
                    task_status.started(client)
                    await done.wait()

            client: SSETestClient = await nursery.start(hold)
            return client

        try:
            yield open_client
        finally:
            done.set()

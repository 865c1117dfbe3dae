"""Runtime tests run under autojump_clock: every block gets a virtual deadline."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

from trio_sse.runtime.hub import Hub
from trio_sse.testing import SSETestClient

from .support import DEADLINE


@pytest.fixture
def client_factory(client_factory: Callable[..., Any]) -> Callable[..., Any]:
    """The shared factory, with a deadline on the whole block."""

    @asynccontextmanager
    async def open_with_deadline(**settings: Any) -> AsyncIterator[tuple[Hub, SSETestClient]]:
        with trio.fail_after(DEADLINE):
            async with client_factory(**settings) as opened:
                yield opened

    return open_with_deadline

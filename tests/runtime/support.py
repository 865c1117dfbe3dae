"""Helpers shared by the runtime tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import trio

import trio_sse
from trio_sse.runtime.hub import Hub
from trio_sse.settings import Settings

#: Virtual seconds after which a stuck test fails instead of spinning on heartbeats forever.
DEADLINE = 3600


@asynccontextmanager
async def open_test_hub(**settings: Any) -> AsyncIterator[Hub]:
    """A hub with ``settings``, with a deadline on the whole block."""
    with trio.fail_after(DEADLINE):
        async with trio_sse.open_hub(Settings(**settings)) as hub:
            yield hub

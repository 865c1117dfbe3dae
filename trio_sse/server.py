"""``serve(app, settings)``: run an app under hypercorn's trio worker with clean shutdown.

On SIGTERM or SIGINT the hub refuses new streams and ends every live one with a final
chunk, then hypercorn stops within ``shutdown_grace``.
"""

from __future__ import annotations

import logging
import signal
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve as hypercorn_serve

from .settings import Settings

__all__ = ["hypercorn_config", "serve"]


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.graceful_timeout = settings.shutdown_grace
    config.keep_alive_timeout = 75.0
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.loglevel = settings.log_level.upper()
    return config


async def _wait_for_signal(app: Any) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            break
    slot = app.extensions.get("trio_sse")
    if slot is not None and slot.hub is not None:
        slot.hub.begin_shutdown()


async def serve(
    app: Any,
    settings: Settings,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    shutdown_trigger: Any = None,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (or ``shutdown_trigger`` returns).

    Reports the bound addresses through ``task_status`` (use ``nursery.start``).
    """
    trigger = shutdown_trigger or (lambda: _wait_for_signal(app))
    await hypercorn_serve(app, hypercorn_config(settings), shutdown_trigger=trigger, task_status=task_status)

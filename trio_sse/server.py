"""``serve(app, settings)``: run an app under hypercorn's trio worker with clean shutdown.

On SIGTERM or SIGINT the hub refuses new streams and ends every live one with a final
chunk, then hypercorn stops within ``shutdown_grace``. The worker is hypercorn's, run
through :mod:`trio_sse.http.hypercorn_trio`: connections whose client has gone are
closed at once, idle ones are bounded by ``idle_timeout`` and ``idle_connection_limit``,
and running out of descriptors is one log line and a quick recovery, not a crash.
"""

from __future__ import annotations

import logging
import signal
import ssl
from typing import Any

import trio
from quart import Quart

from .http import hypercorn_trio
from .http.hypercorn_trio import Config
from .runtime.hub import OPEN_HUBS
from .settings import Settings, SettingsError

__all__ = ["hypercorn_config", "serve", "wait_for_signal"]

#: Offered through ALPN under TLS, preferred first: HTTP/2 multiplexes every stream of a
#: browser tab over one connection, past the 6 connections per host of HTTP/1.1.
ALPN_PROTOCOLS = ["h2", "http/1.1"]


def hypercorn_config(settings: Settings) -> Config:
    config = Config()
    config.bind = [f"{settings.host}:{settings.port}"]
    config.graceful_timeout = settings.shutdown_grace
    # hypercorn's default listen backlog (100) drops connection bursts: thousands of
    # clients reconnecting at once after a deploy must queue, not fail.
    config.backlog = 4096
    # Seconds a connection with no request in progress is kept (see docs/decisions.md).
    config.keep_alive_timeout = settings.idle_timeout
    # A head still arriving past the limit is refused by h11 (an empty 431); a complete
    # one, whatever its size, reaches the app, which refuses it there (JSON 431).
    config.h11_max_incomplete_size = settings.max_head_bytes
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.loglevel = settings.log_level.upper()
    if settings.tls_enabled:
        config.certfile = settings.certfile
        config.keyfile = settings.keyfile
        config.alpn_protocols = list(ALPN_PROTOCOLS)
    return config


def check_tls(config: Config) -> None:
    """Load the certificate and key now, so a bad path is a settings error rather than a traceback.

    hypercorn would load them only once serving starts, deep inside its worker.
    """
    try:
        config.create_ssl_context()
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"certfile/keyfile: cannot load {config.certfile} with {config.keyfile}: {exc}") from None


async def wait_for_signal() -> None:
    """Return on SIGTERM or SIGINT, after telling every open hub to end its streams."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for _ in signals:
            break
    for hub in list(OPEN_HUBS):
        hub.begin_shutdown()


async def serve(
    app: Any,
    settings: Settings,
    *,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
    shutdown_trigger: Any = None,
) -> None:
    """Serve ``app`` until SIGTERM/SIGINT (or ``shutdown_trigger`` returns).

    Reports the bound addresses through ``task_status`` (use ``nursery.start``); with
    ``certfile``/``keyfile`` they are ``https://`` and HTTP/2 is offered. A certificate or
    key that cannot be loaded raises :class:`SettingsError` before anything listens.
    """
    trigger = shutdown_trigger or wait_for_signal
    config = hypercorn_config(settings)
    check_tls(config)
    await hypercorn_trio.serve(
        asgi_entry(app),
        config,
        idle_connection_limit=settings.idle_connection_limit,
        shutdown_trigger=trigger,
        task_status=task_status,
    )


def asgi_entry(app: Any) -> Any:
    """The ASGI callable hypercorn should call for ``app``.

    A Quart app's ``__call__`` only awaits ``app.asgi_app`` (where the lean handlers are
    mounted, see :func:`trio_sse.http.routes.mount_lean_handlers`): handing hypercorn
    ``asgi_app`` itself saves a coroutine per request on the hot paths.
    """
    if isinstance(app, Quart):
        return app.asgi_app
    return app

"""The ``trio-sse`` command: ``serve`` runs a hub and its HTTP app under hypercorn.

Every setting is a ``--flag`` (generated from :class:`trio_sse.settings.Settings`), so
``trio-sse serve --help`` documents them all; flags beat ``TRIO_SSE_*`` env vars,
which beat the ``--config`` TOML file, which beats the profile.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import attrs
import click
import trio

from .runtime.backends import BackendConfigError
from .runtime.gctune import tune_gc
from .server import check_tls, hypercorn_config
from .settings import Settings, SettingsError, load_settings

HELP = {
    "profile": "dev (default) or prod: the defaults below change with it",
    "host": "address to bind",
    "port": "port to bind",
    "backend": "memory, or redis://HOST:PORT/DB for several instances",
    "log_level": "debug, info, warning or error",
    "heartbeat_interval": "seconds of silence before a heartbeat comment is written",
    "send_timeout": "seconds a write may take before the client is considered gone",
    "retry": "reconnection delay sent to clients (milliseconds)",
    "history_size": "events kept for Last-Event-ID replay",
    "queue_size": "events queued per connection before the overflow policy applies",
    "overflow": "disconnect (default) or drop, when a connection's queue is full",
    "connection_limit": "maximum concurrent streams",
    "client_connection_limit": "maximum concurrent streams per client",
    "connection_rate": "new streams per client per minute",
    "publish_rate": "events per publisher per second",
    "max_body_bytes": "largest request body accepted",
    "max_event_bytes": "largest event data accepted",
    "shutdown_grace": "seconds streams get to end on SIGTERM/SIGINT",
    "memory_limit": "RSS bytes above which new streams are refused and the fullest shed (0 = off; prod: 70% of RAM)",
    "test_event": "open or admin: who may POST /sse/test-event",
    "direct_writes": "write events straight to idle HTTP/1.1 sockets (true/false)",
    "flush_interval": "minimum seconds between fan-out rounds: under load, events of one interval share a write",
    "cors_origins": "comma-separated allowed origins, or *",
    "event_types": "extra event types, comma-separated",
    "jwt_secret": "HS256 secret (turns auth on)",
    "jwt_public_key": "path to a PEM public key for RS256/ES256 (turns auth on)",
    "jwt_audience": "required token audience",
    "jwt_issuer": "required token issuer",
    "certfile": "PEM certificate (chain) to serve HTTPS with HTTP/2; needs --keyfile",
    "keyfile": "PEM private key of --certfile",
    "gzip": "gzip streams for clients that send Accept-Encoding: gzip (true/false)",
}


def _setting_options(func: Any) -> Any:
    for field in reversed(attrs.fields(Settings)):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        func = click.option(
            flag,
            field.name,
            default=None,
            help=f"{HELP.get(field.name, '')} [dev default: {shown}; env TRIO_SSE_{field.name.upper()}]",
        )(func)
    return func


@click.group()
@click.version_option(package_name="trio-sse")
def main() -> None:
    """trio_sse: a Server-Sent Events hub on Trio."""


@main.command()
@click.option("--config", "config_file", default=None, help="TOML settings file (env TRIO_SSE_CONFIG)")
@_setting_options
def serve(config_file: str | None, **flags: Any) -> None:
    """Run the SSE hub and its HTTP API (embedded in-memory backend by default)."""
    try:
        settings = load_settings(flags, config_file=config_file)
        check_tls(hypercorn_config(settings))  # a bad certificate path is a usage error, not a traceback
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    tune_gc()
    try:
        trio.run(_serve, settings)
    except (BackendConfigError, SettingsError) as exc:
        raise click.UsageError(str(exc)) from None
    except KeyboardInterrupt:  # pragma: no cover - second Ctrl-C
        pass
    sys.exit(0)


async def _serve(settings: Settings) -> None:
    from .app import create_app
    from .runtime.hub import open_hub
    from .server import serve as serve_app

    async with open_hub(settings) as hub:
        app = create_app(hub=hub)
        await serve_app(app, settings)


if __name__ == "__main__":  # pragma: no cover
    main()

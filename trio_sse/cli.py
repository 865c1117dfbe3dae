"""The ``trio-sse`` command: ``serve`` runs a hub and its HTTP app under hypercorn;
``tail`` prints a server's events; ``publish`` sends one.

Every setting is a ``--flag`` (generated from :class:`trio_sse.settings.Settings`), so
``trio-sse serve --help`` documents them all; flags beat ``TRIO_SSE_*`` env vars,
which beat the ``--config`` TOML file, which beats the profile.
"""

from __future__ import annotations

import logging
import os
import resource
import sys
from functools import partial
from typing import Any

import attrs
import click
import trio

from .app import check_servable
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
    "project_history_size": "events kept per project for replay, whatever other projects publish (0 = none)",
    "history_ttl": "seconds an event stays replayable (0 = no age limit)",
    "queue_size": "events queued per connection before the overflow policy applies",
    "overflow": "disconnect (default) or drop, when a connection's queue is full",
    "connection_limit": "maximum concurrent streams",
    "idle_timeout": "seconds a connection with no request in progress is kept open",
    "idle_connection_limit": "maximum connections with no request in progress; the oldest is closed beyond it",
    "client_connection_limit": "maximum concurrent streams per client",
    "connection_rate": "new streams per client per minute",
    "publish_rate": "events per publisher per second",
    "max_body_bytes": "largest request body accepted",
    "max_event_bytes": "largest event data accepted",
    "max_head_bytes": "largest request head (request line and headers) accepted; beyond it 431",
    "max_rewind": "largest ?rewind=N a new stream may ask for (the newest N matching events first; 0 = none)",
    "shutdown_grace": "seconds streams get to end on SIGTERM/SIGINT",
    "memory_limit": "RSS bytes above which new streams are refused and the fullest shed (0 = off; prod: 70% of RAM)",
    "history_bytes": "bytes the replay history may hold, oldest out first (prod: a quarter of memory_limit)",
    "test_event": "open or admin: who may POST /sse/test-event",
    "direct_writes": "write events straight to idle HTTP/1.1 sockets",
    "flush_interval": "minimum seconds between fan-out rounds: under load, events of one interval share a write",
    "cors_origins": "comma-separated allowed origins, or *",
    "event_types": "extra event types, comma-separated",
    "jwt_secret": "HS256 secret (turns auth on)",
    "jwt_public_key": "path to a PEM public key for RS256/ES256 (turns auth on)",
    "jwt_audience": "required token audience",
    "jwt_issuer": "required token issuer",
    "certfile": "PEM certificate (chain) to serve HTTPS with HTTP/2; needs --keyfile",
    "keyfile": "PEM private key of --certfile",
    "gzip": "gzip streams for clients that send Accept-Encoding: gzip (the same as --compression gzip)",
    "compression": "off, gzip, zstd or auto (zstd, else gzip, whichever the client's Accept-Encoding allows)",
}


def _setting_options(func: Any) -> Any:
    for field in reversed(attrs.fields(Settings)):
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        shown = ",".join(default) if isinstance(default, tuple) else default
        if str(field.type) == "bool":  # annotations are strings (from __future__ import annotations)
            # A switch, as docs/settings.md shows it: ``--gzip`` turns it on, ``--no-gzip``
            # off; left out (None), the environment, the file or the profile decides.
            flag = f"{flag}/--no-{flag[2:]}"
            shown = str(default).lower()
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
        check_servable(settings)  # here, not inside trio.run, where it would be an exception group
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # coredis reports every connection attempt at INFO; our backend reports the state
    # that matters (status degraded/ok in /sse/health and /sse/stats).
    logging.getLogger("coredis").setLevel(logging.WARNING)
    raise_descriptor_limit(settings)
    tune_gc()
    try:
        trio.run(_serve, settings)
    except (BackendConfigError, SettingsError) as exc:
        raise click.UsageError(str(exc)) from None
    except KeyboardInterrupt:  # pragma: no cover - second Ctrl-C
        pass
    sys.exit(0)


#: Descriptors the process needs besides its streams and connections: listening sockets,
#: the log, the backend's connections, the reserve descriptor, what libraries open.
DESCRIPTOR_HEADROOM = 64


def descriptors_needed(settings: Settings) -> int:
    """Descriptors a server with ``settings`` may hold at once.

    One per stream (``connection_limit``); ``idle_connection_limit`` twice: once for the
    idle connections, once for requests in progress that are not streams (publishes,
    health checks; the idle limit is our measure of how many short-lived connections
    the deployment expects); and :data:`DESCRIPTOR_HEADROOM`.
    """
    return settings.connection_limit + 2 * settings.idle_connection_limit + DESCRIPTOR_HEADROOM


def plan_descriptor_limit(soft: int, hard: int, needed: int) -> tuple[int, str | None]:
    """``(soft RLIMIT_NOFILE to set, warning or None)`` for current ``soft``/``hard`` limits.

    The soft limit goes up to the hard one (an unprivileged process may, and Python's
    default 1,024 is far below what a hub with thousands of streams holds). An unlimited
    hard limit cannot be a soft one (Linux caps it at ``fs.nr_open``): then at least
    ``needed``. The warning says what does not fit, and how to fix it.
    """
    infinity = resource.RLIM_INFINITY
    if soft == infinity:
        return soft, None
    target = hard if hard != infinity else max(soft, needed)
    if target >= needed:
        return target, None
    return target, (
        f"the descriptor limit (RLIMIT_NOFILE {target}) is below the {needed} this server may need "
        f"(connection_limit + 2 x idle_connection_limit + {DESCRIPTOR_HEADROOM}): raise the hard limit "
        "(ulimit -Hn, LimitNOFILE= in systemd, --ulimit nofile= in docker) or lower connection_limit"
    )


def raise_descriptor_limit(settings: Settings) -> int:
    """Raise this process's soft RLIMIT_NOFILE as :func:`plan_descriptor_limit` says; the limit now.

    Logs a warning when it stays below :func:`descriptors_needed`.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target, warning = plan_descriptor_limit(soft, hard, descriptors_needed(settings))
    if target != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target, warning = plan_descriptor_limit(soft, soft, descriptors_needed(settings))
    if warning:
        logging.getLogger("trio_sse.server").warning(warning)
    return target


async def _serve(settings: Settings) -> None:
    from .app import create_app
    from .runtime.hub import open_hub
    from .server import serve as serve_app

    async with open_hub(settings) as hub:
        app = create_app(hub=hub)
        await serve_app(app, settings)


def _run_client_command(main_fn: Any, *args: Any) -> Any:
    """Run a client coroutine; a failure is one message on stderr and exit status 1."""
    from .cli_client import CommandFailed

    try:
        return trio.run(main_fn, *args)
    except CommandFailed as exc:
        click.echo(str(exc), err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:  # `trio-sse tail URL | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        sys.exit(0)


#: The CA bundle option of the client commands (see trio_sse.cli_client.tls_context).
CACERT = click.option(
    "--cacert",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="PEM file of the CA(s) to verify an https:// server with, instead of the default bundle "
    "(also: env SSL_CERT_FILE or SSL_CERT_DIR)",
)


def _tag_option(value: str, *, several: bool) -> tuple[str, list[str]]:
    """``NAME=V`` (``NAME=V1,V2`` when ``several``) as ``(NAME, [V, ...])``; ``BadParameter`` otherwise."""
    name, sep, raw = value.partition("=")
    values = [v.strip() for v in raw.split(",")] if several else [raw]
    if not sep or not name.strip() or not all(values):
        shape = "NAME=VALUE[,VALUE...]" if several else "NAME=VALUE"
        raise click.BadParameter(f"{value!r} is not {shape}", param_hint="--tag")
    return name.strip(), values


def tag_filter_option(ctx: click.Context, param: click.Parameter, given: tuple[str, ...]) -> dict[str, list[str]]:
    """Repeated ``--tag NAME=V1,V2`` as a tag filter; the values of one name given twice are joined."""
    wanted: dict[str, list[str]] = {}
    for value in given:
        name, values = _tag_option(value, several=True)
        known = wanted.setdefault(name, [])
        for tag in values:
            if tag not in known:
                known.append(tag)
    return wanted


def event_tags_option(ctx: click.Context, param: click.Parameter, given: tuple[str, ...]) -> dict[str, str]:
    """Repeated ``--tag NAME=VALUE`` as an event's tags (a value may hold commas here)."""
    tags: dict[str, str] = {}
    for value in given:
        name, (tag,) = _tag_option(value, several=False)
        if name in tags:
            raise click.BadParameter(f"tag {name!r} given twice", param_hint="--tag")
        tags[name] = tag
    return tags


@main.command()
@click.argument("url")
@click.option("--types", default=None, help="comma-separated event types (default: every type)")
@click.option("--project", default=None, help="only this project's events (and broadcasts)")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    callback=tag_filter_option,
    metavar="NAME=V1[,V2...]",
    help="only events whose tag NAME is one of the values (repeatable: every name must match)",
)
@click.option(
    "--rewind",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="start with the newest N matching events (not with --last-event-id; at most the server's max_rewind)",
)
@click.option("--token", default=None, help="bearer token, when the server has auth on")
@click.option("--last-event-id", default=None, help="resume after this event id")
@click.option("--max-events", "--count", type=click.IntRange(min=0), default=None, help="exit after N events")
@click.option(
    "--silence-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=90.0,
    show_default=True,
    help="reconnect when nothing (not even a heartbeat) arrives for this many seconds",
)
@click.option(
    "--format",
    "output",
    type=click.Choice(["auto", "pretty", "json"]),
    default="auto",
    show_default=True,
    help="pretty on a terminal, JSON lines otherwise",
)
@click.option("--quiet", "-q", is_flag=True, help="do not report reconnections on stderr")
@CACERT
def tail(
    url: str,
    types: str | None,
    project: str | None,
    tags: dict[str, list[str]],
    rewind: int | None,
    token: str | None,
    last_event_id: str | None,
    max_events: int | None,
    silence_timeout: float,
    output: str,
    quiet: bool,
    cacert: str | None,
) -> None:
    """Print the events of the server at URL as they arrive, reconnecting and resuming after a drop.

    URL is the server's base URL (http://127.0.0.1:8000) or its /sse/events URL. Events go
    to stdout, one JSON object per line ({"event", "id", "data"}) unless stdout is a
    terminal; reconnections and errors go to stderr. System events (connected,
    stream_reset, ...) are printed too but not counted by --max-events. With --rewind N
    the first stream starts with the newest N matching events; a reconnection resumes
    after the last one printed and never rewinds again.
    """
    from .cli_client import EventPrinter, run_tail, setup_logging

    pretty = sys.stdout.isatty() if output == "auto" else output == "pretty"
    setup_logging(pretty, quiet)
    options = {
        "types": types,
        "project": project,
        "tags": tags or None,
        "rewind": rewind,
        "token": token,
        "last_event_id": last_event_id,
        "silence_timeout": silence_timeout,
    }
    run = partial(run_tail, url, EventPrinter(pretty), max_events=max_events, cacert=cacert, **options)
    _run_client_command(run)


@main.command("publish")
@click.argument("url")
@click.argument("event_type", metavar="TYPE")
@click.argument("data", metavar="JSON")
@click.option("--project", default=None, help="the event's project (default: a broadcast)")
@click.option(
    "--tag",
    "tags",
    multiple=True,
    callback=event_tags_option,
    metavar="NAME=VALUE",
    help="a tag of the event, for the streams' tag filters (repeatable)",
)
@click.option("--token", default=None, help="bearer token with the publish right, when auth is on")
@CACERT
def publish_command(
    url: str,
    event_type: str,
    data: str,
    project: str | None,
    tags: dict[str, str],
    token: str | None,
    cacert: str | None,
) -> None:
    """Publish one event of type TYPE with JSON data (- reads it from stdin) and print its id.

    URL is the server's base URL or any of its /sse/... URLs. A refusal prints the
    server's JSON error on stderr and exits with status 1.
    """
    import orjson

    from .cli_client import run_publish

    raw = sys.stdin.read() if data == "-" else data
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc})", param_hint="JSON") from None
    run = partial(run_publish, url, event_type, value, project=project, tags=tags or None, token=token, cacert=cacert)
    click.echo(_run_client_command(run))


if __name__ == "__main__":  # pragma: no cover
    main()

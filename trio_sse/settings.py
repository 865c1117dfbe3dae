"""Settings: one frozen attrs object, loaded from flags > environment > TOML file > profile.

The attrs defaults are the ``dev`` profile, so ``Settings()`` is what ``trio-sse serve``
runs with; :data:`PROFILES` holds what ``prod`` changes. Every value is validated when
the object is built, and a bad value names the setting and where it came from.
"""

from __future__ import annotations

import os
import re
import tomllib
import urllib.parse
from collections.abc import Mapping
from typing import Any

import attrs

from .core.events import DEFAULT_EVENT_TYPES, SYSTEM_EVENT_TYPES, is_valid_event_type

__all__ = [
    "ENV_PREFIX",
    "PROFILES",
    "Settings",
    "SettingsError",
    "backend_kind",
    "default_history_bytes",
    "default_memory_limit",
    "load_settings",
    "machine_memory_bytes",
]

ENV_PREFIX = "TRIO_SSE_"


class SettingsError(ValueError):
    """A setting has a value the server cannot run with."""


def _positive(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:  # also refuses NaN, which compares false to everything
        raise SettingsError(f"{attribute.name} must be > 0, got {value!r}")


def _non_negative(instance: Any, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:  # also refuses NaN
        raise SettingsError(f"{attribute.name} must be >= 0, got {value!r}")


def _one_of(*choices: str) -> Any:
    def check(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
        if value not in choices:
            raise SettingsError(f"{attribute.name} must be one of {', '.join(choices)}; got {value!r}")

    return check


def _port(instance: Any, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 0 <= value <= 65535:
        raise SettingsError(f"port must be between 0 and 65535, got {value!r}")


#: URL schemes that name the Redis Streams backend (``unix://`` is Redis on a socket).
REDIS_URL_SCHEMES = ("redis://", "rediss://", "unix://")


def backend_kind(value: str) -> str:
    """``memory`` or ``redis``: the backend a ``backend`` value names, checked once for both uses.

    The settings validate with it and ``make_backend`` dispatches with it, so the two can
    never disagree on what is a usable URL. Raises :class:`SettingsError`.
    """
    if value == "memory":
        return "memory"
    if not value.startswith(REDIS_URL_SCHEMES):
        raise SettingsError(f"backend must be 'memory' or a redis:// URL, got {value!r}")
    if value.startswith(("redis://", "rediss://")):
        # coredis reads a database that is not a number as database 0: a typo would put
        # this instance on another stream than its peers, silently.
        url = urllib.parse.urlsplit(value)
        try:
            url.port  # noqa: B018 - parsing it is the check
        except ValueError:
            raise SettingsError(f"backend: the port of {value!r} is not a number from 0 to 65535") from None
        if not url.hostname or not re.fullmatch(r"/?\d*", url.path):
            raise SettingsError(f"backend: {value!r} must look like redis://host[:port][/db] (db a number)")
    return "redis"


def _backend(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    backend_kind(value)


def _non_empty(instance: Any, attribute: attrs.Attribute[Any], value: str) -> None:
    if not value:
        raise SettingsError(f"{attribute.name} must not be empty")


def _event_types(instance: Any, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
    for name in value:
        if not is_valid_event_type(name):
            raise SettingsError(f"event_types: {name!r} is not a valid event type name (^[a-z][a-z0-9_.:-]{{0,63}}$)")
        if name in SYSTEM_EVENT_TYPES:
            raise SettingsError(f"event_types: {name!r} is reserved for system events")


def _tls_pair(certfile: str | None, keyfile: str | None) -> None:
    """TLS needs the certificate and its private key: one without the other is a mistake, not plain HTTP.

    The message starts with the setting that was given, so :func:`load_settings` can add its source.
    """
    if certfile and not keyfile:
        raise SettingsError("certfile is set but keyfile is not: HTTPS needs both (or neither, for plain HTTP)")
    if keyfile and not certfile:
        raise SettingsError("keyfile is set but certfile is not: HTTPS needs both (or neither, for plain HTTP)")


def _as_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = value.split(",")
    return tuple(item.strip() for item in value if item.strip())


# cache_hash: settings key per-request caches (authenticator_for), and hashing ~40 fields
# on every request was a measurable part of a single publish (docs/performance.md).
@attrs.frozen(kw_only=True, cache_hash=True)
class Settings:
    """Every knob of a trio_sse server. Sizes are bytes, durations seconds, ``retry`` milliseconds."""

    profile: str = attrs.field(default="dev", validator=_one_of("dev", "prod"))
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8000, validator=_port)
    backend: str = attrs.field(default="memory", validator=_backend)
    redis_stream: str = attrs.field(default="trio_sse:events", validator=_non_empty)
    log_level: str = attrs.field(default="debug", validator=_one_of("debug", "info", "warning", "error"))
    heartbeat_interval: float = attrs.field(default=30.0, validator=_positive)
    send_timeout: float = attrs.field(default=10.0, validator=_positive)
    retry: int = attrs.field(default=3000, validator=_non_negative)
    history_size: int = attrs.field(default=10_000, validator=_positive)
    project_history_size: int = attrs.field(default=100, validator=_non_negative)
    history_ttl: float = attrs.field(default=0.0, validator=_non_negative)
    queue_size: int = attrs.field(default=1000, validator=_positive)
    overflow: str = attrs.field(default="disconnect", validator=_one_of("disconnect", "drop"))
    connection_limit: int = attrs.field(default=100, validator=_positive)
    idle_timeout: float = attrs.field(default=5.0, validator=_positive)
    idle_connection_limit: int = attrs.field(default=256, validator=_positive)
    client_connection_limit: int = attrs.field(default=50, validator=_positive)
    connection_rate: int = attrs.field(default=600, validator=_positive)
    publish_rate: int = attrs.field(default=10_000, validator=_positive)
    max_body_bytes: int = attrs.field(default=1024 * 1024, validator=_positive)
    max_event_bytes: int = attrs.field(default=64 * 1024, validator=_positive)
    max_head_bytes: int = attrs.field(default=16 * 1024, validator=_positive)
    max_rewind: int = attrs.field(default=100, validator=_non_negative)
    shutdown_grace: float = attrs.field(default=5.0, validator=_non_negative)
    memory_limit: int = attrs.field(default=0, validator=_non_negative)
    history_bytes: int = attrs.field(default=128 * 1024 * 1024, validator=_positive)
    test_event: str = attrs.field(default="open", validator=_one_of("open", "admin"))
    direct_writes: bool = True
    flush_interval: float = attrs.field(default=0.005, validator=_non_negative)
    cors_origins: tuple[str, ...] = attrs.field(default=("*",), converter=_as_tuple)
    event_types: tuple[str, ...] = attrs.field(default=(), converter=_as_tuple, validator=_event_types)
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    certfile: str | None = None
    keyfile: str | None = None
    gzip: bool = False
    compression: str = attrs.field(default="off", validator=_one_of("off", "gzip", "zstd", "auto"))

    def __attrs_post_init__(self) -> None:
        _tls_pair(self.certfile, self.keyfile)

    @property
    def registered_event_types(self) -> frozenset[str]:
        """The six default types plus the configured extra ones."""
        return DEFAULT_EVENT_TYPES | frozenset(self.event_types)

    @property
    def stream_compression(self) -> str:
        """The effective ``compression``: ``gzip = true`` is the older spelling of ``gzip``.

        Any ``compression`` other than ``off`` wins over ``gzip`` (the newer, more precise
        setting; ``gzip = true`` with ``compression = "zstd"`` serves zstd, and gzip to
        clients that accept only gzip); with ``compression = "off"`` (the default),
        ``gzip = true`` means ``compression = "gzip"``, as it always did.
        """
        if self.compression == "off" and self.gzip:
            return "gzip"
        return self.compression

    @property
    def tls_enabled(self) -> bool:
        """Serve HTTPS (and HTTP/2 through ALPN) instead of plain HTTP/1.1."""
        return bool(self.certfile and self.keyfile)

    @property
    def auth_enabled(self) -> bool:
        return bool(self.jwt_secret or self.jwt_public_key)

    @classmethod
    def from_profile(cls, profile: str = "dev", **overrides: Any) -> Settings:
        """The profile's defaults with ``overrides`` applied (already typed values)."""
        if profile not in PROFILES:
            raise SettingsError(f"profile must be one of {', '.join(PROFILES)}; got {profile!r}")
        defaults = {name: value() if callable(value) else value for name, value in PROFILES[profile].items()}
        return cls(**{**defaults, **overrides, "profile": profile})


#: Where a memory limit may be set for this process: cgroup v2, then cgroup v1.
CGROUP_MEMORY_FILES = ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")


def machine_memory_bytes(cgroup_files: tuple[str, ...] = CGROUP_MEMORY_FILES) -> int:
    """Memory available to this process: the machine's, or the cgroup's limit when lower.

    Here rather than in ``runtime`` because the ``prod`` defaults are computed from it, and
    settings import nothing of the runtime (the hub's health check reads it from here).
    A file that is missing, unreadable or says ``max`` (no limit) is skipped; cgroup v1's
    "unlimited" is a huge number, which ``min`` ignores.
    """
    import psutil  # only when asked: building settings must stay cheap to import

    total = int(psutil.virtual_memory().total)
    for path in cgroup_files:
        try:
            with open(path) as fh:
                raw = fh.read().strip()
        except OSError:
            continue
        if raw.isdigit() and int(raw) > 0:
            total = min(total, int(raw))
    return total


def default_memory_limit() -> int:
    """70 % of the memory this process may use: the machine's, or its cgroup's limit when lower.

    Computed when the prod settings are built, not at import: the same image runs in
    containers of different sizes.
    """
    return int(0.7 * machine_memory_bytes())


def default_history_bytes() -> int:
    """A quarter of the default ``memory_limit`` (17.5 % of the memory this process may use).

    The history is the one large thing a single publisher can fill (100,000 events of
    64 KiB hold 12.5 GiB); a quarter of the limit leaves the other three for the streams
    and their queues, and memory pressure evicts history before it sheds a stream.
    """
    return default_memory_limit() // 4


#: What each profile sets; anything not listed keeps the attrs default (the dev value).
#: A callable value is called when the profile is applied (a default that depends on the machine).
PROFILES: dict[str, dict[str, Any]] = {
    "dev": {},
    "prod": {
        "connection_limit": 10_000,
        "idle_connection_limit": 1000,
        "log_level": "info",
        "send_timeout": 60.0,
        "history_size": 100_000,
        "project_history_size": 1000,
        "test_event": "admin",
        "cors_origins": (),
        "client_connection_limit": 20,
        "connection_rate": 120,
        "publish_rate": 1000,
        "shutdown_grace": 30.0,
        "memory_limit": default_memory_limit,
        "history_bytes": default_history_bytes,
    },
}

FIELDS: dict[str, attrs.Attribute[Any]] = {a.name: a for a in attrs.fields(Settings)}
_BOOLEAN_WORDS = {
    "1": True,
    "true": True,
    "yes": True,
    "on": True,
    "0": False,
    "false": False,
    "no": False,
    "off": False,
}


def _convert(name: str, raw: Any, source: str) -> Any:
    """Turn a raw value (a string from env/flags, or a TOML value) into the field's type."""
    kind = str(FIELDS[name].type)  # annotations are strings (from __future__ import annotations)
    try:
        if kind in ("int",) and not isinstance(raw, bool):
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError("not a whole number")
            return int(raw)
        if kind == "float" and not isinstance(raw, bool):
            return float(raw)
        if kind == "bool":
            return raw if isinstance(raw, bool) else _BOOLEAN_WORDS[str(raw).strip().lower()]
        if kind == "tuple[str, ...]":
            return _as_tuple(raw)
        if kind in ("str", "str | None"):
            if not isinstance(raw, str):
                raise ValueError("expected a string")
            return raw
    except (ValueError, KeyError, TypeError) as exc:
        raise SettingsError(f"{name} ({source}): cannot use {raw!r}: {exc}") from exc
    raise SettingsError(f"{name} ({source}): unsupported value {raw!r}")


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from exc
    # Accept either top-level keys or a [trio_sse] table.
    table = data.get("trio_sse", data)
    if not isinstance(table, dict):
        raise SettingsError(f"config file {path}: [trio_sse] must be a table")
    return table


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | None = None,
) -> Settings:
    """Build settings with precedence flags > env ``TRIO_SSE_*`` > TOML file > profile.

    ``flags`` holds only the options given on the command line (``None`` values are
    ignored). The config file is ``config_file``, else ``TRIO_SSE_CONFIG``. Unknown
    keys and bad values raise :class:`SettingsError` naming the setting and its source.
    """
    env = os.environ if env is None else env
    layers: list[tuple[str, dict[str, Any]]] = []
    config_file = config_file or env.get(ENV_PREFIX + "CONFIG")
    if config_file:
        layers.append((f"config file {config_file}", _read_toml(config_file)))
    env_values = {
        key[len(ENV_PREFIX) :].lower(): value
        for key, value in env.items()
        if key.startswith(ENV_PREFIX) and key != ENV_PREFIX + "CONFIG"
    }
    layers.append(("environment", {k: v for k, v in env_values.items()}))
    layers.append(("command line", {k: v for k, v in (flags or {}).items() if v is not None}))

    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, values in layers:
        for raw_name, raw in values.items():
            name = raw_name.replace("-", "_")
            if name not in FIELDS:
                where = f"{ENV_PREFIX}{raw_name.upper()}" if source == "environment" else raw_name
                raise SettingsError(f"unknown setting {where!r} ({source})")
            merged[name] = _convert(name, raw, source)
            sources[name] = source
    profile = merged.pop("profile", "dev")
    try:
        return Settings.from_profile(profile, **merged)
    except SettingsError as exc:
        name = str(exc).split(" ", 1)[0].rstrip(":")
        if name in sources:
            raise SettingsError(f"{exc} (from {sources[name]})") from None
        raise

"""Settings: flags beat TRIO_SSE_* env, which beats the TOML file, which beats the profile."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

from trio_sse.core.events import DEFAULT_EVENT_TYPES
from trio_sse.settings import PROFILES, Settings, SettingsError, load_settings

MiB = 1024 * 1024
KiB = 1024


def toml_file(tmp_path: Path, text: str) -> str:
    path = tmp_path / "trio_sse.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_defaults_are_the_dev_profile_from_the_contract() -> None:
    s = load_settings(env={})
    assert s == Settings() == Settings.from_profile("dev")
    assert (s.profile, s.host, s.port, s.backend) == ("dev", "127.0.0.1", 8000, "memory")
    assert (s.connection_limit, s.log_level, s.heartbeat_interval, s.send_timeout) == (100, "debug", 30, 10)
    assert (s.retry, s.history_size, s.queue_size, s.overflow) == (3000, 10_000, 1000, "disconnect")
    assert (s.max_body_bytes, s.max_event_bytes) == (1 * MiB, 64 * KiB)
    assert (s.client_connection_limit, s.connection_rate, s.publish_rate, s.shutdown_grace) == (50, 600, 10_000, 5)
    assert s.test_event == "open"
    assert s.cors_origins == ("*",)
    assert not s.auth_enabled


def test_prod_profile_has_the_contract_values() -> None:
    s = Settings.from_profile("prod")
    assert s.profile == "prod"
    assert (s.connection_limit, s.log_level, s.heartbeat_interval, s.send_timeout) == (10_000, "info", 30, 60)
    assert (s.retry, s.history_size, s.queue_size, s.overflow) == (3000, 100_000, 1000, "disconnect")
    assert (s.max_body_bytes, s.max_event_bytes) == (1 * MiB, 64 * KiB)
    assert (s.client_connection_limit, s.connection_rate, s.publish_rate, s.shutdown_grace) == (20, 120, 1000, 30)
    assert s.test_event == "admin"  # /sse/test-event is admin only
    assert s.cors_origins == ()  # same origin only


def test_prod_profile_is_selected_from_env_flags_or_file(tmp_path: Path) -> None:
    prod = Settings.from_profile("prod")
    assert load_settings(env={"TRIO_SSE_PROFILE": "prod"}) == prod
    assert load_settings({"profile": "prod"}, env={}) == prod
    assert load_settings(env={}, config_file=toml_file(tmp_path, 'profile = "prod"\n')) == prod


def test_from_profile_applies_overrides_on_top_of_the_profile() -> None:
    s = Settings.from_profile("prod", send_timeout=5.0)
    assert (s.send_timeout, s.connection_limit) == (5.0, 10_000)


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(SettingsError, match="profile"):
        Settings.from_profile("staging")
    with pytest.raises(SettingsError, match="profile"):
        load_settings(env={"TRIO_SSE_PROFILE": "staging"})


# --- precedence, one pair at a time, on a setting every layer sets ---------------


def layers(tmp_path: Path, *, flag: bool, env: bool, file: bool) -> Settings:
    """connection_limit from the prod profile (10000), file (5), env (6) and flags (7)."""
    config = toml_file(tmp_path, 'profile = "prod"\n' + ("connection_limit = 5\n" if file else ""))
    return load_settings(
        {"connection_limit": "7"} if flag else {},
        env={"TRIO_SSE_CONNECTION_LIMIT": "6"} if env else {},
        config_file=config,
    )


@pytest.mark.parametrize(
    ("flag", "env", "file", "expected"),
    [
        pytest.param(True, True, False, 7, id="flags-beat-env"),
        pytest.param(True, False, True, 7, id="flags-beat-file"),
        pytest.param(True, False, False, 7, id="flags-beat-profile"),
        pytest.param(False, True, True, 6, id="env-beats-file"),
        pytest.param(False, True, False, 6, id="env-beats-profile"),
        pytest.param(False, False, True, 5, id="file-beats-profile"),
        pytest.param(True, True, True, 7, id="flags-beat-all"),
        pytest.param(False, False, False, 10_000, id="profile-alone"),
    ],
)
def test_precedence_is_flags_then_env_then_file_then_profile(tmp_path, flag, env, file, expected) -> None:
    s = layers(tmp_path, flag=flag, env=env, file=file)
    assert s.profile == "prod"
    assert s.connection_limit == expected


def test_profile_chosen_in_a_lower_layer_still_yields_to_higher_layers(tmp_path: Path) -> None:
    config = toml_file(tmp_path, "send_timeout = 12\n")
    s = load_settings({"log_level": "error"}, env={"TRIO_SSE_PROFILE": "prod"}, config_file=config)
    assert (s.profile, s.send_timeout, s.log_level, s.history_size) == ("prod", 12.0, "error", 100_000)


def test_flags_set_to_none_are_ignored() -> None:
    s = load_settings({"port": None, "host": "0.0.0.0"}, env={"TRIO_SSE_PORT": "9001"})
    assert (s.port, s.host) == (9001, "0.0.0.0")


def test_flag_names_may_use_dashes() -> None:
    assert load_settings({"heartbeat-interval": "2.5"}, env={}).heartbeat_interval == 2.5


# --- environment ------------------------------------------------------------------


def test_env_values_are_converted_to_each_setting_type() -> None:
    s = load_settings(
        env={
            "TRIO_SSE_PORT": "9000",
            "TRIO_SSE_HEARTBEAT_INTERVAL": "0.5",
            "TRIO_SSE_OVERFLOW": "drop",
            "TRIO_SSE_CORS_ORIGINS": "https://a.example, https://b.example",
            "TRIO_SSE_JWT_SECRET": "s3cret",
            "TRIO_SSE_BACKEND": "redis://cache:6379/0",
        }
    )
    assert s.port == 9000 and isinstance(s.port, int)
    assert s.heartbeat_interval == 0.5
    assert s.overflow == "drop"
    assert s.cors_origins == ("https://a.example", "https://b.example")
    assert s.jwt_secret == "s3cret" and s.auth_enabled
    assert s.backend == "redis://cache:6379/0"


def test_event_types_from_env_are_comma_separated_and_registered_with_the_defaults() -> None:
    s = load_settings(env={"TRIO_SSE_EVENT_TYPES": "deploy, build.done,,ns:x-1 "})
    assert s.event_types == ("deploy", "build.done", "ns:x-1")
    assert s.registered_event_types == DEFAULT_EVENT_TYPES | {"deploy", "build.done", "ns:x-1"}


def test_unknown_env_setting_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="TRIO_SSE_NOPE"):
        load_settings(env={"TRIO_SSE_NOPE": "1"})


def test_env_without_the_prefix_is_ignored() -> None:
    assert load_settings(env={"PORT": "1", "SSE_PORT": "2", "TRIO_PORT": "3"}).port == 8000


def test_unknown_flag_is_refused_by_name() -> None:
    with pytest.raises(SettingsError, match="nope"):
        load_settings({"nope": "1"}, env={})


def test_config_file_may_come_from_trio_sse_config(tmp_path: Path) -> None:
    config = toml_file(tmp_path, "port = 8123\n")
    assert load_settings(env={"TRIO_SSE_CONFIG": config}).port == 8123


def test_explicit_config_file_beats_trio_sse_config(tmp_path: Path) -> None:
    other = tmp_path / "other.toml"
    other.write_text("port = 1111\n")
    config = toml_file(tmp_path, "port = 2222\n")
    assert load_settings(env={"TRIO_SSE_CONFIG": str(other)}, config_file=config).port == 2222


# --- TOML file --------------------------------------------------------------------


def test_toml_file_with_top_level_keys(tmp_path: Path) -> None:
    config = toml_file(
        tmp_path,
        'host = "0.0.0.0"\nport = 9100\nsend_timeout = 2.5\nevent_types = ["deploy", "build"]\n'
        'cors_origins = ["https://a.example"]\noverflow = "drop"\n',
    )
    s = load_settings(env={}, config_file=config)
    assert (s.host, s.port, s.send_timeout, s.overflow) == ("0.0.0.0", 9100, 2.5, "drop")
    assert s.event_types == ("deploy", "build")
    assert s.cors_origins == ("https://a.example",)


def test_toml_file_with_a_trio_sse_table(tmp_path: Path) -> None:
    config = toml_file(tmp_path, '[trio_sse]\nport = 9200\nhistory_size = 50\nevent_types = "deploy,build"\n')
    s = load_settings(env={}, config_file=config)
    assert (s.port, s.history_size, s.event_types) == (9200, 50, ("deploy", "build"))


def test_toml_integer_for_a_duration_becomes_a_float(tmp_path: Path) -> None:
    s = load_settings(env={}, config_file=toml_file(tmp_path, "shutdown_grace = 7\n"))
    assert s.shutdown_grace == 7.0 and isinstance(s.shutdown_grace, float)


def test_unknown_key_in_the_file_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="bogus"):
        load_settings(env={}, config_file=toml_file(tmp_path, "bogus = 1\n"))


def test_invalid_toml_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_settings(env={}, config_file=toml_file(tmp_path, "port = = 1\n"))


def test_missing_config_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(env={}, config_file=str(tmp_path / "absent.toml"))


def test_trio_sse_key_that_is_not_a_table_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"\[trio_sse\]"):
        load_settings(env={}, config_file=toml_file(tmp_path, 'trio_sse = "x"\n'))


@pytest.mark.parametrize(
    ("line", "name"),
    [
        ("port = true", "port"),
        ("port = 80.5", "port"),
        ("host = 5", "host"),
        ("send_timeout = true", "send_timeout"),
        ('send_timeout = "soon"', "send_timeout"),
    ],
)
def test_toml_values_of_the_wrong_type_are_refused_by_name(tmp_path: Path, line: str, name: str) -> None:
    config = toml_file(tmp_path, line + "\n")
    with pytest.raises(SettingsError, match=name):
        load_settings(env={}, config_file=config)


def test_toml_number_written_as_a_string_is_converted_like_env(tmp_path: Path) -> None:
    assert load_settings(env={}, config_file=toml_file(tmp_path, 'port = "80"\n')).port == 80


# --- bad values -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("port", "abc"),
        ("port", "70000"),
        ("port", "-1"),
        ("port", "8.5"),
        ("heartbeat_interval", "0"),
        ("heartbeat_interval", "-1"),
        ("heartbeat_interval", "nan"),
        ("send_timeout", "never"),
        ("send_timeout", "nan"),
        ("retry", "-1"),
        ("history_size", "0"),
        ("queue_size", "0"),
        ("connection_limit", "-5"),
        ("client_connection_limit", "0"),
        ("connection_rate", "0"),
        ("publish_rate", "0"),
        ("max_body_bytes", "0"),
        ("max_event_bytes", "1KiB"),
        ("shutdown_grace", "-1"),
        ("shutdown_grace", "nan"),
        ("overflow", "block"),
        ("log_level", "verbose"),
        ("test_event", "closed"),
        ("backend", "postgres://db"),
        ("profile", "staging"),
    ],
)
def test_bad_values_are_refused_naming_the_setting(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings(env={f"TRIO_SSE_{name.upper()}": value})


@pytest.mark.parametrize("names", ["Deploy", "1build", "deploy,has space", "x" * 65, "ok,Bad!"])
def test_invalid_event_type_names_are_refused(names: str) -> None:
    with pytest.raises(SettingsError, match="event_types"):
        load_settings(env={"TRIO_SSE_EVENT_TYPES": names})


@pytest.mark.parametrize("name", ["connected", "subscription_updated", "stream_reset"])
def test_system_event_types_cannot_be_configured(name: str) -> None:
    with pytest.raises(SettingsError, match="reserved"):
        Settings(event_types=(name,))


def test_zero_values_allowed_where_they_mean_something() -> None:
    s = load_settings(env={"TRIO_SSE_PORT": "0", "TRIO_SSE_RETRY": "0", "TRIO_SSE_SHUTDOWN_GRACE": "0"})
    assert (s.port, s.retry, s.shutdown_grace) == (0, 0, 0.0)


def test_backend_accepts_redis_urls() -> None:
    for url in (
        "redis://localhost:6379/0",
        "rediss://h:6380/1",
        "unix:///tmp/redis.sock",
        "redis://h",
        "redis://:pw@h:6379/",
        "redis://h/2?protocol_version=2",
    ):
        assert Settings(backend=url).backend == url


@pytest.mark.parametrize(
    "url", ["redis://h:6379/abc", "redis://h:port/0", "redis://h:99999", "redis:///0", "redis://h/0/x"]
)
def test_backend_urls_that_redis_clients_would_misread_are_refused(url: str) -> None:
    with pytest.raises(SettingsError, match="backend"):
        Settings(backend=url)


def test_auth_is_on_as_soon_as_a_key_is_set() -> None:
    assert Settings(jwt_secret="k").auth_enabled
    assert Settings(jwt_public_key="/etc/key.pem").auth_enabled
    assert not Settings(jwt_audience="aud").auth_enabled


def test_settings_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


def test_profiles_only_change_known_settings() -> None:
    names = {f.name for f in attrs.fields(Settings)}
    assert set(PROFILES) == {"dev", "prod"}
    for values in PROFILES.values():
        assert set(values) <= names


def test_history_bytes_is_128_mib_in_dev_and_a_quarter_of_the_memory_limit_in_prod() -> None:
    from trio_sse.settings import default_history_bytes, default_memory_limit

    assert Settings().history_bytes == 128 * MiB
    prod = Settings.from_profile("prod")
    assert prod.history_bytes == default_history_bytes() == default_memory_limit() // 4
    assert prod.history_bytes < prod.memory_limit
    assert load_settings({"history_bytes": "1000"}, env={"TRIO_SSE_PROFILE": "prod"}).history_bytes == 1000
    assert load_settings(env={"TRIO_SSE_HISTORY_BYTES": "2048"}).history_bytes == 2048
    with pytest.raises(SettingsError, match="history_bytes must be > 0"):
        load_settings(env={"TRIO_SSE_HISTORY_BYTES": "0"})


# -- compression (issue 13, item 5) ------------------------------------------------------


def test_compression_is_off_in_both_profiles_and_read_from_flags_env_and_file(tmp_path: Path) -> None:
    assert Settings().compression == "off" and Settings.from_profile("prod").compression == "off"
    assert Settings().stream_compression == "off"
    assert load_settings(env={"TRIO_SSE_COMPRESSION": "zstd"}).compression == "zstd"
    config = tmp_path / "c.toml"
    config.write_text('compression = "auto"\n')
    assert load_settings(config_file=str(config), env={}).compression == "auto"
    assert load_settings({"compression": "gzip"}, env={"TRIO_SSE_COMPRESSION": "zstd"}).compression == "gzip"
    with pytest.raises(SettingsError, match="compression"):
        load_settings(env={"TRIO_SSE_COMPRESSION": "brotli"})


@pytest.mark.parametrize(
    ("gzip", "compression", "effective"),
    [
        (False, "off", "off"),
        (True, "off", "gzip"),  # today's gzip = true keeps working
        (True, "zstd", "zstd"),  # a compression other than off wins over the old switch
        (True, "auto", "auto"),
        (False, "gzip", "gzip"),
    ],
)
def test_gzip_true_means_compression_gzip_unless_compression_says_otherwise(
    gzip: bool, compression: str, effective: str
) -> None:
    assert Settings(gzip=gzip, compression=compression).stream_compression == effective


def test_retention_settings_have_the_contract_defaults_and_come_from_flags_env_and_file(tmp_path: Path) -> None:
    assert (Settings().project_history_size, Settings().history_ttl) == (100, 0.0)
    prod = Settings.from_profile("prod")
    assert (prod.project_history_size, prod.history_ttl) == (1000, 0.0)
    config = tmp_path / "trio_sse.toml"
    config.write_text("project_history_size = 7\nhistory_ttl = 3600\n")
    from_file = load_settings(config_file=str(config), env={})
    assert (from_file.project_history_size, from_file.history_ttl) == (7, 3600.0)
    env = {"TRIO_SSE_PROJECT_HISTORY_SIZE": "50", "TRIO_SSE_HISTORY_TTL": "1.5"}
    from_env = load_settings(config_file=str(config), env=env)
    assert (from_env.project_history_size, from_env.history_ttl) == (50, 1.5)
    flags = {"project_history_size": "0", "history_ttl": "0"}  # 0: no project windows, no age limit
    from_flags = load_settings(flags, config_file=str(config), env=env)
    assert (from_flags.project_history_size, from_flags.history_ttl) == (0, 0.0)
    with pytest.raises(SettingsError, match="project_history_size must be >= 0"):
        load_settings(env={"TRIO_SSE_PROJECT_HISTORY_SIZE": "-1"})
    with pytest.raises(SettingsError, match="history_ttl must be >= 0"):
        load_settings({"history_ttl": "-5"})

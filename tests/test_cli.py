"""The command line, as a user runs it: ``trio-sse serve`` / ``python -m trio_sse serve`` and
``hypercorn --worker-class trio 'trio_sse.app:create_app()'`` in real subprocesses."""

from __future__ import annotations

import os
import resource
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import psutil
import pytest

from trio_sse.cli import DESCRIPTOR_HEADROOM, descriptors_needed, plan_descriptor_limit
from trio_sse.settings import Settings

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT = 20.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_SSE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def trio_sse_command(port: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", "trio_sse", "serve", "--port", str(port), "--log-level", "warning", *flags]


def hypercorn_command(port: int, *flags: str) -> list[str]:
    return [
        str(BIN / "hypercorn"),
        "--worker-class",
        "trio",
        "--bind",
        f"127.0.0.1:{port}",
        *flags,
        "trio_sse.app:create_app()",
    ]


@attrs.define
class Server:
    process: subprocess.Popen[bytes]
    base_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@contextmanager
def running(
    command: list[str],
    port: int,
    tmp_path: Path,
    env: dict[str, str] | None = None,
    *,
    verify: ssl.SSLContext | None = None,
) -> Iterator[Server]:
    """Start ``command`` and wait for its health check (over HTTPS when ``verify`` is given).

    The command runs in a session of its own, and the whole group is killed at the end:
    hypercorn serves from a worker process, which survived a SIGKILL of hypercorn's main
    process and kept listening after the test (and after the run).
    """
    log = tmp_path / f"server-{port}.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            command, stdout=sink, stderr=subprocess.STDOUT, env=env or clean_env(), start_new_session=True
        )
    server = Server(process, f"{'https' if verify else 'http'}://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            assert process.poll() is None, f"server exited with {process.returncode}:\n{server.output()}"
            try:
                health = httpx.get(server.base_url + "/sse/health", timeout=1.0, verify=verify or True)
                if health.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"server not ready after {STARTUP_TIMEOUT} s:\n{server.output()}"
            time.sleep(0.05)
        yield server
    finally:
        # Even when the main process has exited (a test signalled it), its group may not have.
        kill_group(process)


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL every process of ``process``'s group (its own session) and reap ``process``."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:  # the whole group is gone already
        pass
    process.wait(timeout=10)


COMMANDS = {"trio-sse serve": trio_sse_command, "hypercorn": hypercorn_command}


def test_running_leaves_no_hypercorn_worker_behind(tmp_path: Path) -> None:
    # hypercorn serves from a worker process; killing only its parent left the worker
    # listening after the test, and after the run (one per ./scripts/test).
    port = free_port()
    with running(hypercorn_command(port), port, tmp_path) as server:
        workers = psutil.Process(server.process.pid).children(recursive=True)
        assert workers, "hypercorn serves from a worker process"
    _, alive = psutil.wait_procs(workers, timeout=5)
    assert not [worker for worker in alive if worker.status() != psutil.STATUS_ZOMBIE], alive
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/sse/health", timeout=1)


@pytest.mark.parametrize("kind", COMMANDS)
def test_server_answers_health_and_publishes(kind: str, tmp_path: Path) -> None:
    port = free_port()
    with running(COMMANDS[kind](port), port, tmp_path) as server:
        reply = httpx.get(server.base_url + "/sse/health", timeout=5)
        assert reply.status_code == 200 and reply.json()["status"] == "ok"
        published = httpx.post(server.base_url + "/sse/publish", json={"event_type": "commit", "data": 1}, timeout=5)
        assert published.status_code == 202
        assert httpx.get(server.base_url + "/sse/stats", timeout=5).json()["events_published"] == 1


@pytest.mark.parametrize(
    ("kind", "signum"),
    [("trio-sse serve", signal.SIGTERM), ("hypercorn", signal.SIGTERM), ("trio-sse serve", signal.SIGINT)],
    ids=["trio-sse serve-SIGTERM", "hypercorn-SIGTERM", "trio-sse serve-SIGINT"],
)
def test_signal_ends_open_stream_cleanly_and_exits_zero_within_grace(
    kind: str, signum: signal.Signals, tmp_path: Path
) -> None:
    grace = 2.0
    port = free_port()
    flags = ("--shutdown-grace", str(grace)) if kind == "trio-sse serve" else ("--graceful-timeout", str(int(grace)))
    with running(COMMANDS[kind](port, *flags), port, tmp_path) as server:
        timeout = httpx.Timeout(5.0, read=grace + 5.0)
        with httpx.Client(base_url=server.base_url, timeout=timeout) as http:
            with http.stream("GET", "/sse/events") as response:
                assert response.status_code == 200
                lines = response.iter_lines()
                assert next(line for line in lines if line.startswith("event:")) == "event: connected"
                signalled = time.monotonic()
                server.process.send_signal(signum)
                # A clean end is the chunked body's final chunk: httpx raises on a cut connection.
                rest = list(lines)
                ended = time.monotonic() - signalled
        assert not any(line.startswith("event: ") and "connected" not in line for line in rest), rest
        # trio-sse serve ends idle streams gracefully at once: reaching the grace would mean the
        # signal was not handled and the stream was only forced closed. Hypercorn's own runner
        # ends them when its graceful timeout runs out.
        limit = grace if kind == "trio-sse serve" else grace + 1.0
        assert ended < limit, f"stream ended {ended:.1f} s after {signum.name}"
        assert server.process.wait(timeout=grace + 5.0) == 0, server.output()
        assert time.monotonic() - signalled < grace + 5.0


def test_the_embedding_example_streams_its_progress_and_closes_the_hub_on_sigterm(tmp_path: Path) -> None:
    # examples/embedded_app.py is what docs/embedding.md tells people to copy: it must run.
    port = free_port()
    command = [sys.executable, str(REPO / "examples" / "embedded_app.py"), str(port)]
    with running(command, port, tmp_path) as server:
        with httpx.Client(base_url=server.base_url, timeout=httpx.Timeout(5.0, read=10.0)) as http:
            with http.stream("GET", "/sse/events", params={"types": "progress_update", "project": "demo"}) as response:
                lines = response.iter_lines()
                assert next(line for line in lines if line.startswith("event:")) == "event: connected"
                # Its publisher runs once a second: the next one arrives on this stream.
                assert next(line for line in lines if line.startswith("event:")) == "event: progress_update"
                data = next(line for line in lines if line.startswith("data:"))
                assert '"task":"demo"' in data.replace(" ", "")
                server.process.send_signal(signal.SIGTERM)
                list(lines)  # a clean end of the body, or httpx raises
        assert server.process.wait(timeout=10) == 0, server.output()
        output = server.output()
        assert f"serving on http://127.0.0.1:{port}" in output and output.rstrip().endswith("hub closed")


def test_help_lists_every_setting_flag() -> None:
    result = subprocess.run(
        [str(BIN / "trio-sse"), "serve", "--help"], capture_output=True, text=True, env=clean_env(), timeout=30
    )
    assert result.returncode == 0, result.stderr
    for field in attrs.fields(Settings):
        assert "--" + field.name.replace("_", "-") in result.stdout, field.name
    for flag in ("--heartbeat-interval", "--send-timeout", "--history-size", "--config", "--profile"):
        assert flag in result.stdout


@pytest.mark.parametrize(
    ("args", "env", "setting"),
    [
        (["--port", "abc"], {}, "port"),
        (["--heartbeat-interval", "soon"], {}, "heartbeat_interval"),
        (["--overflow", "explode"], {}, "overflow"),
        ([], {"TRIO_SSE_HEARTBEAT_INTERVAL": "-1"}, "heartbeat_interval"),
        ([], {"TRIO_SSE_PROFILE": "staging"}, "profile"),
    ],
)
def test_bad_setting_exits_nonzero_naming_the_setting(args: list[str], env: dict[str, str], setting: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_sse", "serve", *args],
        capture_output=True,
        text=True,
        env=clean_env(**env),
        timeout=30,
    )
    assert result.returncode != 0
    assert setting in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_hypercorn_refuses_to_start_with_a_bad_setting() -> None:
    port = free_port()
    # The app fails to load and the process ends (timeout otherwise). Its exit status is not
    # checked: hypercorn's multi-process runner (0.18) reports 0 when its worker dies at startup.
    result = subprocess.run(
        hypercorn_command(port),
        capture_output=True,
        text=True,
        timeout=30,
        env=clean_env(TRIO_SSE_HEARTBEAT_INTERVAL="-1"),
    )
    assert "heartbeat_interval" in result.stdout + result.stderr
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{port}/sse/health", timeout=1)


def test_serve_with_certfile_and_keyfile_answers_over_https_and_http2(tmp_path: Path, tls: Any) -> None:
    port = free_port()
    command = trio_sse_command(port, "--certfile", tls.certfile, "--keyfile", tls.keyfile)
    with running(command, port, tmp_path, verify=tls.client_context) as server:
        assert server.base_url.startswith("https://")
        with httpx.Client(base_url=server.base_url, verify=tls.client_context, http2=True, timeout=5) as http:
            health = http.get("/sse/health")
            assert health.status_code == 200 and health.http_version == "HTTP/2"
            with http.stream("GET", "/sse/events") as response:
                assert response.http_version == "HTTP/2"
                lines = response.iter_lines()
                assert next(line for line in lines if line.startswith("event:")) == "event: connected"
        with pytest.raises(httpx.TransportError):  # plain HTTP is not served on that port
            httpx.get(f"http://127.0.0.1:{port}/sse/health", timeout=2)


def test_serve_with_certfile_but_no_keyfile_exits_with_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trio_sse", "serve", "--certfile", "cert.pem"],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )
    assert result.returncode == 2
    assert "certfile is set but keyfile is not" in result.stderr and "(from command line)" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_with_an_unreadable_certificate_exits_with_a_usage_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.pem")
    result = subprocess.run(
        trio_sse_command(free_port(), "--certfile", missing, "--keyfile", missing),
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert "certfile/keyfile: cannot load" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--profile", "prod"], {}, "the prod profile requires token auth"),
        (["--profile", "prod", "--jwt-secret", "k"], {}, "jwt_secret is 1 bytes; the prod profile requires at least"),
        ([], {"TRIO_SSE_JWT_PUBLIC_KEY": "/etc/hostname"}, "is not a PEM public key"),
        (["--backend", "redis://127.0.0.1:6379/abc"], {}, "must look like redis://host[:port][/db]"),
    ],
)
def test_serve_refuses_settings_it_cannot_run_with_as_a_usage_error(
    args: list[str], env: dict[str, str], message: str
) -> None:
    result = subprocess.run(
        [*trio_sse_command(free_port()), *args],
        capture_output=True,
        text=True,
        env={**clean_env(), **env},
        timeout=30,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


BOOLEAN_SETTINGS = [field.name for field in attrs.fields(Settings) if field.type == "bool"]


def serve_settings(monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str]) -> Settings:
    """The settings ``trio-sse serve ARGS`` would run with, parsed by the real command (nothing served)."""
    from click.testing import CliRunner

    from trio_sse import cli

    seen: list[Settings] = []

    async def record(settings: Settings) -> None:
        seen.append(settings)

    monkeypatch.setattr(cli, "_serve", record)
    monkeypatch.setattr(cli, "tune_gc", lambda: None)  # process-wide: not in the test process
    monkeypatch.setattr(cli.logging, "basicConfig", lambda **kwargs: None)
    clean = {key: None for key in os.environ if key.startswith("TRIO_SSE_")}
    result = CliRunner().invoke(cli.main, ["serve", *args], env={**clean, **env})
    assert result.exit_code == 0, result.output
    (settings,) = seen
    return settings


def test_the_boolean_settings_found_include_gzip_and_direct_writes() -> None:
    assert {"gzip", "direct_writes"} <= set(BOOLEAN_SETTINGS)


@pytest.mark.parametrize("name", BOOLEAN_SETTINGS)
def test_boolean_setting_takes_flag_and_no_flag(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # docs/settings.md lists `--gzip` as a plain flag: `trio-sse serve --gzip` must turn it on
    # (it used to be refused with "Option '--gzip' requires an argument").
    flag = "--" + name.replace("_", "-")
    off = "--no-" + name.replace("_", "-")
    env_name = "TRIO_SSE_" + name.upper()
    assert getattr(serve_settings(monkeypatch, [flag], {env_name: "false"}), name) is True
    assert getattr(serve_settings(monkeypatch, [off], {env_name: "true"}), name) is False
    # Left out, the environment (and below it the file and the profile) decides.
    assert getattr(serve_settings(monkeypatch, [], {env_name: "true"}), name) is True
    assert getattr(serve_settings(monkeypatch, [], {env_name: "false"}), name) is False
    assert getattr(serve_settings(monkeypatch, [], {}), name) is attrs.fields_dict(Settings)[name].default


def test_serve_gzip_flag_serves_gzip_streams(tmp_path: Path) -> None:
    port = free_port()
    with running(trio_sse_command(port, "--gzip"), port, tmp_path) as server:
        headers = {"Accept-Encoding": "gzip"}
        with (
            httpx.Client(base_url=server.base_url, timeout=5) as http,
            http.stream("GET", "/sse/events", headers=headers) as response,
        ):
            assert response.status_code == 200
            assert response.headers.get("content-encoding") == "gzip"


def test_serve_compression_flag_and_env_reach_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    assert serve_settings(monkeypatch, ["--compression", "zstd"], {}).compression == "zstd"
    assert serve_settings(monkeypatch, [], {"TRIO_SSE_COMPRESSION": "auto"}).compression == "auto"
    assert serve_settings(monkeypatch, ["--gzip"], {}).stream_compression == "gzip"


# -- RLIMIT_NOFILE at start (issue 11, item 1; the real process is in test_descriptors.py) ----

INFINITY = resource.RLIM_INFINITY


def test_descriptors_needed_are_the_streams_twice_the_idle_limit_and_head_room() -> None:
    assert descriptors_needed(Settings()) == 100 + 2 * 256 + DESCRIPTOR_HEADROOM
    assert descriptors_needed(Settings(connection_limit=10_000, idle_connection_limit=1000)) == 12_000 + 64


@pytest.mark.parametrize(
    ("soft", "hard", "needed", "target", "warns"),
    [
        (1024, 524_288, 12_064, 524_288, False),  # raised to the hard limit
        (1024, 4096, 676, 4096, False),
        (1024, 4096, 12_064, 4096, True),  # raised, and still too low
        (4096, 4096, 4096, 4096, False),  # exactly enough
        (4096, 4096, 4097, 4096, True),
        (1024, INFINITY, 12_064, 12_064, False),  # no hard limit: at least what is needed
        (50_000, INFINITY, 12_064, 50_000, False),  # never lowered
        (INFINITY, INFINITY, 12_064, INFINITY, False),
    ],
)
def test_soft_descriptor_limit_is_raised_to_the_hard_limit_with_a_warning_when_still_too_low(
    soft: int, hard: int, needed: int, target: int, warns: bool
) -> None:
    planned, warning = plan_descriptor_limit(soft, hard, needed)
    assert planned == target
    assert (warning is not None) == warns
    if warning:
        assert f"RLIMIT_NOFILE {target}" in warning and str(needed) in warning and "connection_limit" in warning

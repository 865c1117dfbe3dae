"""``trio-sse tail`` and ``trio-sse publish`` as a user runs them: real subprocesses
(``python -m trio_sse``) against a real hypercorn started in the test, on the real clock."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import jwt
import orjson
import pytest
import trio
import trustme

import trio_sse

ROOT = Path(trio_sse.__file__).resolve().parent.parent
TIMEOUT = 20.0


def env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TRIO_SSE_")}
    return {**clean, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


async def cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(TIMEOUT):
        return await trio.run_process(
            [sys.executable, "-m", "trio_sse", *args],
            stdin=stdin,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            env=env(),
        )


async def cli_publish(url: str, event_type: str, data: Any, *flags: str) -> str:
    result = await cli("publish", url, event_type, orjson.dumps(data).decode(), *flags)
    assert result.returncode == 0, result.stderr.decode()
    return result.stdout.decode().strip()


async def cli_all(*commands: tuple[str, ...]) -> list[subprocess.CompletedProcess[bytes]]:
    """Run independent commands concurrently (each start costs the interpreter's import time)."""
    results: list[Any] = [None] * len(commands)

    async def run(index: int, args: tuple[str, ...]) -> None:
        results[index] = await cli(*args)

    async with trio.open_nursery() as nursery:
        for index, args in enumerate(commands):
            nursery.start_soon(run, index, args)
    return results


async def wait_until(condition: Callable[[], bool]) -> None:
    with trio.fail_after(TIMEOUT):
        while not condition():  # noqa: ASYNC110 - polling another process's effect on the server
            await trio.sleep(0.02)


class Tail:
    """``trio-sse tail`` running in the background; ``result`` once it has exited."""

    def __init__(self) -> None:
        self.result: subprocess.CompletedProcess[bytes] | None = None

    async def run(self, *args: str) -> None:
        self.result = await cli("tail", *args)

    def lines(self) -> list[dict[str, Any]]:
        assert self.result is not None
        assert self.result.returncode == 0, self.result.stderr.decode()
        return [orjson.loads(line) for line in self.result.stdout.splitlines()]


async def test_tail_prints_json_lines_of_published_events_and_exits_after_max_events(live_server_factory) -> None:
    tail = Tail()
    async with live_server_factory() as server, trio.open_nursery() as nursery:
        nursery.start_soon(tail.run, server.base_url, "--types", "commit,risk_alert", "--max-events", "2")
        await wait_until(lambda: server.hub.snapshot()["active_connections"] == 1)
        first = await cli_publish(server.base_url, "commit", {"sha": "abc"})
        await cli_publish(server.base_url, "task_update", {"n": 1})  # filtered out by --types
        piped = await cli(
            "publish", server.base_url + "/sse/publish", "risk_alert", "-", "--project", "p1", stdin=b'{"level":"high"}'
        )
        assert piped.returncode == 0, piped.stderr
        second = piped.stdout.decode().strip()
    lines = tail.lines()
    assert [line["event"] for line in lines] == ["connected", "commit", "risk_alert"]
    assert lines[0]["data"]["event_types"] == ["commit", "risk_alert"] and lines[0]["id"] is None
    assert lines[1:] == [
        {"event": "commit", "id": first, "data": {"sha": "abc"}},
        {"event": "risk_alert", "id": second, "data": {"level": "high"}},
    ]


async def test_tail_resumes_after_the_server_drops_it_without_loss_or_duplicate(live_server_factory) -> None:
    tail = Tail()
    async with live_server_factory(retry=50) as server, trio.open_nursery() as nursery:
        nursery.start_soon(tail.run, server.base_url + "/sse/events", "--max-events", "3", "--types", "commit")
        await wait_until(lambda: server.hub.snapshot()["active_connections"] == 1)
        ids = [await cli_publish(server.base_url, "commit", 1)]
        await wait_until(lambda: server.hub.snapshot()["events_delivered"] == 1)
        (connection,) = server.hub.connections()
        connection.close("slow_consumer")  # dropped without a clean end
        ids += [await cli_publish(server.base_url, "commit", n) for n in (2, 3)]  # maybe while away
    lines = tail.lines()
    assert [line["id"] for line in lines if line["event"] == "commit"] == ids
    assert [line["event"] for line in lines].count("connected") == 2
    assert "stream_reset" not in [line["event"] for line in lines]
    assert b"reconnecting" in tail.result.stderr  # type: ignore[union-attr]


async def test_tail_and_publish_pass_the_token(live_server_factory) -> None:
    secret = "s" * 32
    claims = {"sub": "ci", "exp": int(time.time()) + 600, "sse": {"projects": ["*"], "publish": True}}
    token = jwt.encode(claims, secret, algorithm="HS256")
    tail = Tail()
    async with live_server_factory(jwt_secret=secret) as server, trio.open_nursery() as nursery:
        refused = await cli("publish", server.base_url, "commit", "1")
        assert refused.returncode == 1 and b'"error":"invalid_token"' in refused.stderr
        nursery.start_soon(tail.run, server.base_url, "--token", token, "--max-events", "1", "--format", "json")
        await wait_until(lambda: server.hub.snapshot()["active_connections"] == 1)
        event_id = await cli_publish(server.base_url, "commit", 1, "--token", token)
    assert [line["id"] for line in tail.lines()] == [None, event_id]


async def test_refusals_print_the_server_json_error_and_exit_1(live_server_factory) -> None:
    async with live_server_factory() as server:
        published, tailed, too_big = await cli_all(
            ("publish", server.base_url, "nope", "{}"),
            ("tail", server.base_url, "--types", "commit,nope"),
            ("publish", server.base_url, "commit", orjson.dumps("x" * 70_000).decode()),
        )
    for result in (published, tailed):
        assert result.returncode == 1 and result.stdout == b""
        stderr = result.stderr.decode()
        assert "HTTP 422" in stderr and "Traceback" not in stderr
        assert orjson.loads(stderr.splitlines()[-1])["invalid_types"] == ["nope"]
    assert too_big.returncode == 1 and b"HTTP 413" in too_big.stderr


async def test_publish_refuses_invalid_json_and_an_unreachable_server() -> None:
    bad, unreachable, from_stdin = await cli_all(
        ("publish", "http://127.0.0.1:9", "commit", "{nope"),
        ("publish", "http://127.0.0.1:9/sse/publish?access_token=s3cret", "commit", "1"),
        ("publish", "http://127.0.0.1:9", "commit", "-"),  # stdin is empty: not JSON
    )
    assert bad.returncode == 2 and b"not valid JSON" in bad.stderr
    assert from_stdin.returncode == 2 and b"not valid JSON" in from_stdin.stderr
    assert unreachable.returncode == 1 and b"cannot reach http://127.0.0.1:9" in unreachable.stderr
    assert b"s3cret" not in unreachable.stderr and b"access_token=REDACTED" in unreachable.stderr


async def test_tail_pretty_format_shows_type_id_and_data(live_server_factory) -> None:
    tail = Tail()
    async with live_server_factory() as server, trio.open_nursery() as nursery:
        nursery.start_soon(tail.run, server.base_url, "--max-events", "1", "--format", "pretty")
        await wait_until(lambda: server.hub.snapshot()["active_connections"] == 1)
        event_id = await cli_publish(server.base_url, "commit", {"sha": "abc"})
    assert tail.result is not None and tail.result.returncode == 0
    last = tail.result.stdout.decode().splitlines()[-1]
    assert "commit" in last and event_id in last and '{"sha":"abc"}' in last
    assert not last.startswith("{")


async def test_tail_last_event_id_replays_what_followed_within_the_project(live_server_factory) -> None:
    async with live_server_factory() as server:
        start = await server.hub.publish("commit", {"n": 0}, project_id="p1")
        await server.hub.publish("commit", {"n": 1}, project_id="p2")  # another project: not for us
        wanted = await server.hub.publish("commit", {"n": 2}, project_id="p1")
        tail = Tail()
        await tail.run(server.base_url, "--last-event-id", start, "--project", "p1", "--max-events", "1")
    lines = tail.lines()
    assert lines[0]["event"] == "connected" and lines[0]["data"]["project_id"] == "p1"
    assert lines[1:] == [{"event": "commit", "id": wanted, "data": {"n": 2}}]


def write_ca_and_certificate(directory: Path, host: str = "127.0.0.1") -> dict[str, str]:
    """A trustme CA (its PEM in ``ca``) and a server certificate for ``host`` signed by it."""
    ca = trustme.CA()
    cert = ca.issue_cert(host)
    files = {
        "ca": str(directory / "ca.pem"),
        "certfile": str(directory / "cert.pem"),
        "keyfile": str(directory / "key.pem"),
    }
    ca.cert_pem.write_to_path(files["ca"])
    cert.cert_chain_pems[0].write_to_path(files["certfile"])
    cert.private_key_pem.write_to_path(files["keyfile"])
    return files


@pytest.mark.one_backend  # TLS is the same whatever the backend
async def test_tls_failures_say_certificate_verify_failed_and_how_to_pass_a_ca_bundle(
    live_server_factory, tmp_path: Path
) -> None:
    files = write_ca_and_certificate(tmp_path)
    async with live_server_factory(certfile=files["certfile"], keyfile=files["keyfile"]) as server:
        assert server.base_url.startswith("https://")
        localhost = server.base_url.replace("127.0.0.1", "localhost")
        # tail used to retry an unverifiable certificate forever, logging ConnectError('');
        # it now ends at once (within TIMEOUT, or cli() fails) with the reason.
        published, tailed, mismatch = await cli_all(
            ("publish", server.base_url, "commit", "1"),
            ("tail", server.base_url, "--max-events", "1"),
            ("publish", localhost, "commit", "1", "--cacert", files["ca"]),
        )
    for result in (published, tailed):
        stderr = result.stderr.decode()
        assert result.returncode == 1 and result.stdout == b"", stderr
        assert "certificate verify failed: unable to get local issuer certificate" in stderr
        assert "--cacert FILE" in stderr and "SSL_CERT_FILE" in stderr
        assert "ConnectError('')" not in stderr and "Traceback" not in stderr
    stderr = mismatch.stderr.decode()
    assert mismatch.returncode == 1 and "Hostname mismatch, certificate is not valid for 'localhost'" in stderr, stderr
    assert "host name the certificate was issued for" in stderr


@pytest.mark.one_backend  # TLS is the same whatever the backend
async def test_cacert_trusts_the_servers_ca_for_tail_and_publish(live_server_factory, tmp_path: Path) -> None:
    files = write_ca_and_certificate(tmp_path)
    tail = Tail()
    async with (
        live_server_factory(certfile=files["certfile"], keyfile=files["keyfile"]) as server,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(tail.run, server.base_url, "--cacert", files["ca"], "--max-events", "1", "--types", "commit")
        await wait_until(lambda: server.hub.snapshot()["active_connections"] == 1)
        event_id = await cli_publish(server.base_url, "commit", {"over": "tls"}, "--cacert", files["ca"])
        not_a_ca, missing = await cli_all(
            ("publish", server.base_url, "commit", "1", "--cacert", files["keyfile"]),
            ("publish", server.base_url, "commit", "1", "--cacert", str(tmp_path / "nope.pem")),
        )
    assert tail.lines()[1:] == [{"event": "commit", "id": event_id, "data": {"over": "tls"}}]
    assert not_a_ca.returncode == 1 and b"cannot load the CA bundle" in not_a_ca.stderr
    assert missing.returncode == 2 and b"does not exist" in missing.stderr


async def test_a_certificate_failure_after_the_stream_worked_is_retried_with_its_reason() -> None:
    # A running tail whose server changes to a bad certificate keeps retrying (it might be
    # fixed), but the log line says why instead of ConnectError('').
    from trio_sse.cli_client import _TlsFailed, _TlsReportingClient

    def verify_failure(request: httpx.Request) -> httpx.ConnectError:
        cause = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
        cause.verify_code, cause.verify_message = 19, "self-signed certificate in certificate chain"
        try:
            raise trio.BrokenResourceError from cause  # what httpcore's trio backend wraps
        except trio.BrokenResourceError as broken:
            error = httpx.ConnectError("", request=request)
            error.__cause__ = broken
            return error

    answers: list[Any] = ["ok", "fail"]

    def handler(request: httpx.Request) -> httpx.Response:
        if answers.pop(0) == "fail":
            raise verify_failure(request)
        return httpx.Response(200)

    def always_fail(request: httpx.Request) -> httpx.Response:
        raise verify_failure(request)

    async with _TlsReportingClient(transport=httpx.MockTransport(always_fail)) as first:
        with pytest.raises(_TlsFailed):  # before anything worked: the command ends
            await first.get("https://127.0.0.1/")
    async with _TlsReportingClient(transport=httpx.MockTransport(handler)) as later:
        await later.get("https://127.0.0.1/")
        with pytest.raises(httpx.ConnectError) as raised:
            await later.get("https://127.0.0.1/")
    message = str(raised.value)
    assert "certificate verify failed: self-signed certificate in certificate chain" in message
    assert "--cacert FILE" in message and "\n" not in message


async def test_tail_rewind_and_tag_start_with_the_newest_matching_events_then_follow_live(live_server_factory) -> None:
    async with live_server_factory() as server:
        ids = [
            await server.hub.publish("commit", {"n": n}, tags={"env": env, "team": "core"})
            for n, env in enumerate(["prod", "dev", "staging", "prod", "dev"])
        ]
        await server.hub.publish("commit", {"n": 5}, tags={"env": "prod", "team": "web"})  # --tag team=core refuses it
        tail = Tail()
        async with trio.open_nursery() as nursery:
            args = ("--rewind", "2", "--tag", "env=prod,dev", "--tag", "team=core", "--max-events", "3")
            nursery.start_soon(tail.run, server.base_url, "--types", "commit", *args, "--format", "json")
            await wait_until(lambda: server.hub.snapshot()["events_delivered"] == 2)
            live = await cli_publish(server.base_url, "commit", {"n": 6}, "--tag", "env=dev", "--tag", "team=core")
    lines = tail.lines()
    assert lines[0]["event"] == "connected"
    assert lines[0]["data"]["tags"] == {"env": ["dev", "prod"], "team": ["core"]}
    assert [(line["id"], line["data"]) for line in lines[1:]] == [
        (ids[3], {"n": 3}),
        (ids[4], {"n": 4}),
        (live, {"n": 6}),
    ]


async def test_tail_tag_and_rewind_options_are_checked_before_connecting() -> None:
    bad_tag, bad_rewind, bad_publish_tag = await cli_all(
        ("tail", "http://127.0.0.1:9", "--tag", "env"),
        ("tail", "http://127.0.0.1:9", "--rewind", "-1"),
        ("publish", "http://127.0.0.1:9", "commit", "1", "--tag", "=x"),
    )
    for result in (bad_tag, bad_rewind, bad_publish_tag):
        assert result.returncode == 2 and b"cannot reach" not in result.stderr
    assert b"NAME=VALUE" in bad_tag.stderr and b"NAME=VALUE" in bad_publish_tag.stderr
    assert b"--rewind" in bad_rewind.stderr


async def test_tail_rewind_over_max_rewind_prints_the_server_error(live_server_factory) -> None:
    async with live_server_factory(max_rewind=3) as server:
        result = await cli("tail", server.base_url, "--rewind", "4")
    assert result.returncode == 1 and b"HTTP 400" in result.stderr and b"max_rewind" in result.stderr

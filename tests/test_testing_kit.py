"""The test kit itself: ``trio_sse.testing``'s assertion and publish helpers, and the pytest plugin's fixtures.

The helpers exist to fail usefully, so most tests here check that they fail — with an
``AssertionError`` naming what arrived instead — as much as that they pass.
"""

from __future__ import annotations

import importlib
import time
import tomllib
from importlib.metadata import entry_points
from pathlib import Path

import jwt
import pytest
import trio
from quart_trio import QuartTrio

import trio_sse
from trio_sse.runtime.hub import Hub
from trio_sse.settings import Settings
from trio_sse.testing import ANY, DEFAULT_TIMEOUT, SSETestClient, settings_for_tests

ROOT = Path(__file__).resolve().parent.parent


# -- the fixtures, used exactly as a user's test would ------------------------------------


async def test_fixtures_observe_a_30s_heartbeat_in_milliseconds_of_real_time(
    sse_client: SSETestClient, sse_hub: Hub, autojump_clock: trio.testing.MockClock
) -> None:
    assert sse_hub.settings.heartbeat_interval == 30
    real_start = time.perf_counter()
    async with sse_client.stream() as stream:
        await stream.expect_event("connected")
        start = trio.current_time()
        assert await stream.next_comment() == "heartbeat"
        assert trio.current_time() - start == pytest.approx(30)
    assert time.perf_counter() - real_start < 2  # milliseconds in practice; 2 s leaves room for a loaded CI box


async def test_sse_client_talks_to_the_sse_hub(sse_client: SSETestClient, sse_hub: Hub) -> None:
    assert sse_client.hub is sse_hub
    async with sse_client.stream(types="commit") as stream:
        await stream.expect_event("connected")
        event_id = await sse_hub.publish("commit", {"sha": "abc"})
        await stream.expect_event("commit", {"sha": "abc"}, id=event_id)


def test_default_settings_are_dev_with_a_short_shutdown_grace(sse_settings: Settings) -> None:
    assert sse_settings == Settings(shutdown_grace=1.0)
    assert settings_for_tests(queue_size=3) == Settings(shutdown_grace=1.0, queue_size=3)


@pytest.mark.sse_settings(heartbeat_interval=5, event_types=("deploy",))
async def test_sse_settings_marker_configures_the_hub(sse_client: SSETestClient, sse_hub: Hub, autojump_clock) -> None:
    assert sse_hub.settings.heartbeat_interval == 5
    async with sse_client.stream(types="deploy") as stream:
        await stream.expect_event("connected")
        await sse_client.publish("deploy", {"version": 2})
        await stream.expect_event("deploy", {"version": 2})
        start = trio.current_time()
        assert await stream.next_comment() == "heartbeat"
        assert trio.current_time() - start == pytest.approx(5)


@pytest.mark.sse_settings("positional")
def test_sse_settings_marker_refuses_positional_arguments(request: pytest.FixtureRequest) -> None:
    with pytest.raises(TypeError, match="keyword arguments only"):
        request.getfixturevalue("sse_settings")


class TestOverridingTheSettingsFixture:
    """A module, class or conftest can replace ``sse_settings``; ``sse_hub`` then uses it."""

    @pytest.fixture
    def sse_settings(self) -> Settings:
        return Settings(queue_size=7, retry=1234)

    async def test_the_hub_uses_the_overriding_fixture(self, sse_client: SSETestClient, sse_hub: Hub) -> None:
        assert sse_hub.settings.queue_size == 7
        async with sse_client.stream() as stream:
            assert (await stream.expect_event("connected")).retry == 1234


def test_pyproject_declares_the_plugin_as_a_pytest11_entry_point() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    target = project["entry-points"]["pytest11"]["trio_sse"]
    plugin = importlib.import_module(target)
    for name in ("sse_settings", "sse_hub", "sse_app", "sse_client"):
        assert hasattr(plugin, name), name


def test_a_user_project_gets_the_fixtures_with_no_conftest(pytester: pytest.Pytester) -> None:
    """A fresh project with only a test file: pytest finds the fixtures by itself."""
    pytester.makeini("[pytest]\ntrio_mode = true\n")
    pytester.makepyfile(
        """
        import trio

        async def test_heartbeat(sse_client, autojump_clock):
            async with sse_client.stream() as stream:
                await stream.expect_event("connected")
                start = trio.current_time()
                assert await stream.next_comment() == "heartbeat"
                assert trio.current_time() - start == 30
                await sse_client.publish("commit", {"sha": "abc"})
                await stream.expect_event("commit", {"sha": "abc"})
        """
    )
    installed = any(ep.name == "trio_sse" for ep in entry_points(group="pytest11"))
    # Without an install that has the entry point, load the module the entry point names.
    result = pytester.runpytest(*([] if installed else ["-p", "trio_sse.pytest_plugin"]))
    result.assert_outcomes(passed=1)


# -- expect_event / wait_for_event / expect_events -----------------------------------------


async def test_expect_event_returns_the_matching_event(sse_client: SSETestClient, autojump_clock) -> None:
    async with sse_client.stream() as stream:
        connected = await stream.expect_event("connected", id=None)
        assert connected.data.startswith('{"connection_id"')
        event_id = await sse_client.publish("commit", {"sha": "abc", "n": 3}, project_id="p1")
        event = await stream.expect_event("commit", lambda data: data["n"] > 2, id=event_id)
        assert event.id == event_id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"type": "task_update"}, "type 'commit' != 'task_update'"),
        ({"type": "commit", "data": {"sha": "xyz"}}, "data {'sha': 'abc'} != {'sha': 'xyz'}"),
        ({"data": lambda data: data["sha"] == "xyz"}, "does not satisfy"),
        ({"id": "0-0"}, "!= '0-0'"),
    ],
)
async def test_expect_event_fails_naming_what_arrived_instead(
    sse_client: SSETestClient, autojump_clock, kwargs: dict[str, object], message: str
) -> None:
    async with sse_client.stream() as stream:
        await stream.expect_event("connected")
        await sse_client.publish("commit", {"sha": "abc"})
        with pytest.raises(AssertionError, match="got ParsedEvent") as failure:
            await stream.expect_event(**kwargs)  # type: ignore[arg-type]
        assert message in str(failure.value)


async def test_expect_event_fails_after_its_timeout_instead_of_hanging(
    sse_client: SSETestClient, autojump_clock
) -> None:
    async with sse_client.stream() as stream:
        await stream.expect_event("connected")
        start = trio.current_time()
        with pytest.raises(
            AssertionError, match=r"expected an event with type='commit'; nothing arrived within 10.0 s"
        ):
            await stream.expect_event("commit")
        assert trio.current_time() - start == pytest.approx(DEFAULT_TIMEOUT)
        with pytest.raises(AssertionError, match="within 45 s"):
            await stream.expect_event(timeout=45)  # heartbeats at 30 s do not count as events


async def test_expect_event_fails_when_the_stream_ends_first(sse_client: SSETestClient, sse_hub: Hub) -> None:
    async with sse_client.stream() as stream:
        await stream.expect_event("connected")
        sse_hub.begin_shutdown()
        with pytest.raises(AssertionError, match="the stream ended first"):
            await stream.expect_event("commit")


async def test_wait_for_event_skips_events_that_do_not_match(sse_client: SSETestClient, autojump_clock) -> None:
    async with sse_client.stream() as stream:
        await sse_client.publish("commit", {"n": 1})
        await sse_client.publish("commit", {"n": 2})
        event = await stream.wait_for_event("commit", {"n": 2})
        assert event.data == '{"n":2}'
        assert stream.pending() == []
        with pytest.raises(AssertionError, match=r"skipped \[ParsedEvent\(type='task_update'"):
            await sse_client.publish("task_update", {"n": 3})
            await stream.wait_for_event("commit", timeout=1)


async def test_expect_events_checks_types_in_order(sse_client: SSETestClient, autojump_clock) -> None:
    async with sse_client.stream() as stream:
        await stream.expect_event("connected")
        await sse_client.publish_many(
            [{"event_type": "commit", "data": 1}, {"event_type": "risk_alert", "data": 2, "project_id": "p1"}]
        )
        commit, alert = await stream.expect_events("commit", "risk_alert")
        assert (commit.data, alert.data) == ("1", "2")
        await sse_client.publish("commit", 3)
        with pytest.raises(AssertionError, match="type 'commit' != 'risk_alert'"):
            await stream.expect_events("risk_alert")


# -- assert_no_event_within ----------------------------------------------------------------


@pytest.mark.sse_settings(heartbeat_interval=5)
async def test_no_event_within_passes_through_heartbeats_and_costs_no_real_time(
    sse_client: SSETestClient, autojump_clock
) -> None:
    async with sse_client.stream(types="commit") as stream:
        await stream.expect_event("connected")
        await sse_client.publish("task_update", {"filtered": "out"})
        real_start, start = time.perf_counter(), trio.current_time()
        await stream.assert_no_event_within(601)
        assert trio.current_time() - start == pytest.approx(601)
        assert time.perf_counter() - real_start < 2
        assert len(stream.pending()) == 120  # the heartbeats, every 5 s, stay unread


async def test_no_event_within_fails_when_an_event_arrives_in_the_window(
    sse_client: SSETestClient, sse_hub: Hub, autojump_clock
) -> None:
    async def publish_later() -> None:
        await trio.sleep(3)
        await sse_hub.publish("commit", {"late": True})

    async with sse_client.stream() as stream, trio.open_nursery() as nursery:
        await stream.expect_event("connected")
        nursery.start_soon(publish_later)
        with pytest.raises(AssertionError, match=r"expected no event for 10 s; got .*'commit'.* after 3(\.\d+)? s"):
            await stream.assert_no_event_within(10)


async def test_no_event_within_fails_on_an_unread_event(sse_client: SSETestClient, autojump_clock) -> None:
    async with sse_client.stream() as stream:  # the connected event is still unread
        with pytest.raises(AssertionError, match=r"'connected'.* after 0 s"):
            await stream.assert_no_event_within(1)


async def test_no_event_within_fails_when_the_stream_ends(sse_client: SSETestClient, sse_hub: Hub) -> None:
    async with sse_client.stream() as stream:
        await stream.expect_event("connected")
        sse_hub.begin_shutdown()
        with pytest.raises(AssertionError, match="the stream ended"):
            await stream.assert_no_event_within(5)


# -- publishing and subscribing through the app --------------------------------------------


async def test_publish_goes_through_http_and_fails_on_refusal(sse_client: SSETestClient, sse_hub: Hub) -> None:
    event_id = await sse_client.publish("commit", {"sha": "abc"})
    assert sse_hub.snapshot()["history"]["newest_id"] == event_id
    with pytest.raises(AssertionError, match=r"publish 'nope' answered 422: .*invalid_types"):
        await sse_client.publish("nope", {})
    with pytest.raises(AssertionError, match="batch publish answered 422"):
        await sse_client.publish_many([{"event_type": "commit", "data": 1}, {"event_type": "nope", "data": 2}])
    assert sse_hub.snapshot()["events_published"] == 1


async def test_subscribe_changes_the_filters_of_a_live_stream(sse_client: SSETestClient, autojump_clock) -> None:
    async with sse_client.stream(types=["commit"]) as stream:
        await stream.expect_event("connected")
        reply = await sse_client.subscribe(stream, ["task_update"], mode="add", project_id="p1")
        assert reply == {
            "connection_id": stream.connection_id,
            "event_types": ["commit", "task_update"],
            "project_id": "p1",
        }
        await stream.expect_event("subscription_updated", reply, id=None)
        await sse_client.publish("task_update", {"n": 1}, project_id="p2")
        await sse_client.publish("task_update", {"n": 2}, project_id="p1")
        await stream.expect_event("task_update", {"n": 2})
        with pytest.raises(AssertionError, match="subscribe answered 404"):
            await sse_client.subscribe("no-such-connection", ["commit"])


async def test_stream_shortcuts_filter_and_resume(sse_client: SSETestClient, autojump_clock) -> None:
    first = await sse_client.publish("commit", {"n": 1}, project_id="p1")
    await sse_client.publish("commit", {"n": 2}, project_id="p2")
    third = await sse_client.publish("commit", {"n": 3}, project_id="p1")
    async with sse_client.stream(types=["commit", "risk_alert"], project="p1", last_event_id=first) as stream:
        await stream.expect_event(
            "connected", {"connection_id": ANY, "event_types": ["commit", "risk_alert"], "project_id": "p1"}
        )
        await stream.expect_event("commit", {"n": 3}, id=third)
        await stream.assert_no_event_within(1)


async def test_client_headers_go_with_every_request_and_the_request_headers_win(autojump_clock) -> None:
    secret = "kit-test-secret-0123456789-0123456789"

    def bearer(publish: bool) -> str:
        claims = {"sub": "kit", "exp": 4_000_000_000, "sse": {"projects": ["*"], "publish": publish}}
        return "Bearer " + jwt.encode(claims, secret, algorithm="HS256")

    async with trio_sse.open_hub(Settings(jwt_secret=secret)) as hub:
        app = trio_sse.create_app(hub=hub)
        async with SSETestClient(app, headers={"Authorization": bearer(True)}) as client:
            async with client.stream() as stream:
                assert stream.status == 200
                await client.publish("commit", 1)
                await stream.wait_for_event("commit", 1)
            with pytest.raises(AssertionError, match="answered 403"):
                await client.publish("commit", 2, headers={"authorization": bearer(False)})


async def test_prefix_serves_a_blueprint_mounted_in_your_own_app(sse_hub: Hub, autojump_clock) -> None:
    app = QuartTrio(__name__)
    app.register_blueprint(trio_sse.blueprint(sse_hub), url_prefix="/live")
    async with SSETestClient(app, prefix="/live") as client, client.stream() as stream:
        assert stream.status == 200
        await stream.expect_event("connected")
        event_id = await client.publish("commit", {"mounted": True})
        await client.subscribe(stream, ["commit", "file_change"])
        await stream.expect_events("commit", "subscription_updated")
        assert (await client.get("/live/sse/stats")).json()["events_published"] == 1
        assert stream.pending() == [] and event_id
        with pytest.raises(LookupError):
            client.hub  # noqa: B018 - the property raises

"""Testing an app that uses trio_sse: a complete test file to copy into your project.

Needs pytest, pytest-trio and ``trio_mode = true`` under ``[tool.pytest.ini_options]``.
The fixtures (sse_settings, sse_hub, sse_app, sse_client) come from trio_sse's pytest
plugin, which pytest loads by itself once trio_sse is installed. This file is also part
of trio_sse's own test suite, so it cannot drift from the code (docs/testing.md shows it).
"""

import pytest
import trio
from quart_trio import QuartTrio

import trio_sse
from trio_sse.testing import ANY, SSETestClient

# -- the stream as trio_sse serves it ------------------------------------------------------


async def test_heartbeat_written_after_30_s_of_silence(sse_client, autojump_clock):
    # autojump_clock: when every task waits, trio's clock jumps to the next deadline,
    # so these 30 s take milliseconds of real time.
    async with sse_client.stream() as stream:
        await stream.expect_event("connected")
        start = trio.current_time()
        assert await stream.next_comment() == "heartbeat"
        assert trio.current_time() - start == pytest.approx(30)


async def test_published_event_reaches_a_matching_stream_only(sse_client, autojump_clock):
    async with sse_client.stream(types="progress_update", project="p1") as stream:
        await stream.expect_event(
            "connected", {"connection_id": ANY, "event_types": ["progress_update"], "project_id": "p1"}
        )
        await sse_client.publish("commit", {"sha": "abc"}, project_id="p1")  # another type
        await sse_client.publish("progress_update", {"progress": 10}, project_id="p2")  # another project
        event_id = await sse_client.publish("progress_update", {"progress": 75}, project_id="p1")
        await stream.expect_event("progress_update", {"progress": 75}, id=event_id)
        await stream.assert_no_event_within(60)  # 60 s of trio time, no real wait


async def test_reconnecting_client_gets_what_it_missed(sse_client, sse_hub, autojump_clock):
    async with sse_client.stream(types="commit") as stream:
        await stream.expect_event("connected")
        seen = await sse_hub.publish("commit", {"n": 1})  # from Python, as an embedding program would
        await stream.expect_event("commit", {"n": 1})
    await sse_hub.publish("commit", {"n": 2})  # published while the client was away
    async with sse_client.stream(types="commit", last_event_id=seen) as stream:
        await stream.expect_event("connected")
        await stream.expect_event("commit", {"n": 2})


async def test_live_filter_change(sse_client, autojump_clock):
    async with sse_client.stream(types="commit") as stream:
        await stream.expect_event("connected")
        await sse_client.subscribe(stream, ["risk_alert"], mode="add")
        await stream.expect_event("subscription_updated")
        await sse_client.publish("risk_alert", {"level": "high"})
        await stream.expect_event("risk_alert", lambda data: data["level"] == "high")


@pytest.mark.sse_settings(send_timeout=10, heartbeat_interval=3600)
async def test_stuck_client_is_closed_after_send_timeout(sse_client, sse_hub, autojump_clock):
    async with sse_client.stream() as stream:
        await stream.expect_event("connected")
        stream.pause()  # stop reading: the next write blocks like a full TCP window
        await sse_client.publish("system_status", {"ok": True})
        start = trio.current_time()
        await stream.wait_ended()
        assert trio.current_time() - start == pytest.approx(10)
        assert sse_hub.snapshot()["disconnects"] == {"send_timeout": 1}


async def test_unknown_type_is_refused_before_the_stream(sse_client):
    async with sse_client.stream(types="nope") as stream:
        assert stream.status == 422
        assert stream.json["invalid_types"] == ["nope"]
    reply = await sse_client.post("/sse/publish", json={"event_type": "nope", "data": {}})
    assert reply.status == 422


# -- your own app, with trio_sse's blueprint mounted in it -----------------------------------


class TestMyOwnApp:
    """Fixtures defined here replace the plugin's for these tests only."""

    @pytest.fixture
    def sse_app(self, sse_hub):
        app = QuartTrio(__name__)

        @app.post("/jobs/<job_id>/done")
        async def job_done(job_id):
            event_id = await sse_hub.publish("task_update", {"job": job_id, "state": "done"})
            return {"event_id": event_id}, 202

        app.register_blueprint(trio_sse.blueprint(sse_hub), url_prefix="/live")
        return app

    @pytest.fixture
    async def sse_client(self, sse_app):
        async with SSETestClient(sse_app, prefix="/live") as client:
            yield client

    async def test_finishing_a_job_notifies_the_stream(self, sse_client, autojump_clock):
        async with sse_client.stream(types="task_update") as stream:  # GET /live/sse/events
            await stream.expect_event("connected")
            reply = await sse_client.post("/jobs/42/done")
            assert reply.status == 202
            await stream.expect_event("task_update", {"job": "42", "state": "done"}, id=reply.json()["event_id"])

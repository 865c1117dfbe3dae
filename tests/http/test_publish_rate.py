"""publish_rate: events per second per publisher, refused with 429 + Retry-After, recovering after."""

from __future__ import annotations

import trio

from trio_sse.testing import SSETestClient

COMMIT = {"event_type": "commit", "data": 1}


async def test_publishes_over_the_rate_get_429_and_change_nothing_then_recover(autojump_clock, client_factory) -> None:
    async with client_factory(publish_rate=5) as (hub, client):
        for _ in range(5):
            assert (await client.post("/sse/publish", json=COMMIT)).status == 202
        refused = await client.post("/sse/publish", json=COMMIT)
        assert refused.status == 429
        assert refused.json()["error"] == "publish_rate"
        assert int(refused.headers["retry-after"]) >= 1
        snapshot = hub.snapshot()
        assert snapshot["events_published"] == 5
        assert snapshot["rejected_publishes"] == {"publish_rate": 1}
        await trio.sleep(1.0)  # a full second refills the bucket
        for _ in range(5):
            assert (await client.post("/sse/publish", json=COMMIT)).status == 202


async def test_a_batch_counts_each_event_against_the_rate(autojump_clock, client_factory) -> None:
    async with client_factory(publish_rate=10) as (hub, client):
        assert (await client.post("/sse/publish", json={"events": [COMMIT] * 8})).status == 202
        assert (await client.post("/sse/publish", json={"events": [COMMIT] * 3})).status == 429
        assert (await client.post("/sse/publish", json={"events": [COMMIT] * 2})).status == 202
        assert hub.snapshot()["events_published"] == 10


async def test_a_batch_larger_than_the_rate_is_accepted_from_a_full_budget_then_paid_back(
    autojump_clock, client_factory
) -> None:
    async with client_factory(publish_rate=10) as (_, client):
        assert (await client.post("/sse/publish", json={"events": [COMMIT] * 30})).status == 202
        refused = await client.post("/sse/publish", json=COMMIT)
        assert refused.status == 429
        assert int(refused.headers["retry-after"]) >= 2  # 20 events of debt at 10/s
        await trio.sleep(1.9)  # a 10-event budget would have refilled long ago; the debt is not paid yet
        assert (await client.post("/sse/publish", json=COMMIT)).status == 429
        await trio.sleep(1.1)
        assert (await client.post("/sse/publish", json=COMMIT)).status == 202


async def test_publishers_have_separate_budgets_and_test_event_counts_too(autojump_clock, client_factory) -> None:
    async with client_factory(publish_rate=2) as (hub, client):
        for _ in range(2):
            assert (await client.post("/sse/test-event")).status == 202
        assert (await client.post("/sse/test-event")).status == 429
        assert (await client.post("/sse/publish", json=COMMIT)).status == 429  # one budget for both routes
        # Another publisher (here: another address, no token) has a full budget of its own.
        async with SSETestClient(client.app, client=("10.0.0.7", 40000)) as other:
            assert (await other.post("/sse/publish", json={"events": [COMMIT] * 2})).status == 202
            assert (await other.post("/sse/test-event")).status == 429
        assert hub.snapshot()["events_published"] == 4

"""publish_rate: events per second per publisher, refused with 429 + Retry-After, recovering after."""

from __future__ import annotations

import trio

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
        await trio.sleep(3.0)
        assert (await client.post("/sse/publish", json=COMMIT)).status == 202


async def test_publishers_have_separate_budgets_and_test_event_counts_too(autojump_clock, client_factory) -> None:
    async with client_factory(publish_rate=2) as (hub, client):
        for _ in range(2):
            assert (await client.post("/sse/test-event")).status == 202
        assert (await client.post("/sse/test-event")).status == 429
        hub.admit_publish("someone-else", 2)  # another publisher's budget is untouched
        assert hub.snapshot()["events_published"] == 2

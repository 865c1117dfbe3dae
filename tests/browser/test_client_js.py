"""client.js in Chromium: tabs of one origin share ONE stream, and the stream survives the leader tab.

The pages come from the static server (another origin than the API), so this also
covers client.js across origins: the script tag, EventSource and the CORS preflight of
``POST /sse/subscribe``.
"""

from __future__ import annotations

from typing import Any

from browser_support import ServerThread, StaticServer, wait_for, wait_in_page

PAGE = """<!doctype html>
<meta charset="utf-8">
<title>client.js test page</title>
<script src="{api}/sse/client.js"></script>
<script>
  window.received = [];
  window.statuses = [];
  window.sse = TrioSSE.connect("{api}/sse/events", {{types: ["commit"]}});
  sse.on("*", (data, event) => received.push([event.id, event.type, data]));
  sse.on("open", () => statuses.push("open"));
  sse.on("leader", () => statuses.push("leader"));
</script>
"""


def open_tab(context: Any, url: str) -> Any:
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(url)
    return page


def received_ids(page: Any) -> list[str]:
    return [event_id for event_id, _, _ in page.evaluate("received")]


def the_one_stream(server: ServerThread) -> dict[str, Any]:
    """The server's only stream (fails while there are none or several)."""
    listing = wait_for(lambda: (c := server.get("/sse/connections"))["total"] == 1 and c, what="exactly one stream")
    assert server.get("/sse/stats")["active_connections"] == 1
    stream: dict[str, Any] = listing["connections"][0]
    return stream


def test_tabs_share_one_stream_and_the_next_tab_takes_over(
    context, server_factory, static_server: StaticServer
) -> None:
    server = server_factory(retry=500)
    static_server.pages["/tab.html"] = PAGE.format(api=server.base_url)
    url = f"{static_server.base_url}/tab.html"

    leader = open_tab(context, url)
    wait_in_page(leader, "sse.isLeader && sse.connectionId !== null")
    follower = open_tab(context, url)
    # The follower learns the stream's connection id from the leader's broadcast.
    wait_in_page(follower, "sse.connectionId !== null")
    first = the_one_stream(server)
    assert follower.evaluate("[sse.isLeader, sse.connectionId]") == [False, first["connection_id"]]
    assert first["event_types"] == ["commit"]

    ids = [server.publish("commit", {"n": n}) for n in range(5)]
    for page in (leader, follower):
        wait_in_page(page, "received.length >= 5")
        assert received_ids(page) == ids
    assert follower.evaluate("received.map(r => r[2].n)") == list(range(5))

    # A filter change from the follower tab changes the one live stream (no second stream).
    answer = follower.evaluate("sse.subscribe(['commit', 'risk_alert'])")
    assert answer == {
        "connection_id": first["connection_id"],
        "event_types": ["commit", "risk_alert"],
        "project_id": None,
    }
    assert the_one_stream(server)["event_types"] == ["commit", "risk_alert"]
    ids.append(server.publish("risk_alert", {"level": "high"}))
    server.publish("task_update", {"ignored": True})  # outside the filters: reaches no tab
    ids.append(server.publish("commit", {"n": 5}))
    for page in (leader, follower):
        wait_in_page(page, "received.length >= 7")
        assert received_ids(page) == ids

    # The leader tab goes away: the follower takes the stream over, with the same filters,
    # and resumes after the last id it saw. To make "meanwhile" certain, the leader's
    # stream is cut first (as a network drop would), so the events published before the
    # tab closes reach no tab live and can only come from the resume.
    leader.evaluate("sse._source.close()")
    wait_for(lambda: server.get("/sse/stats")["active_connections"] == 0, what="the cut stream to end")
    during = [server.publish("commit", {"n": n}) for n in range(6, 9)]
    leader.close()
    wait_in_page(follower, "sse.isLeader")
    second = wait_for(
        lambda: (s := the_one_stream(server))["connection_id"] != first["connection_id"] and s,
        what="the new leader's stream",
    )
    assert second["event_types"] == ["commit", "risk_alert"]
    wait_in_page(follower, f"sse.connectionId === {second['connection_id']!r}")
    after = [server.publish("commit", {"n": 9}), server.publish("risk_alert", {"level": "low"})]
    wait_in_page(follower, f"received.length >= {len(ids) + len(during) + len(after)}")
    assert received_ids(follower) == ids + during + after  # every event once, in order
    assert follower.evaluate("statuses") == ["leader", "open"]
    assert follower.errors == [] and leader.errors == []


def test_client_js_without_sharing_owns_its_stream(context, server_factory, static_server: StaticServer) -> None:
    server = server_factory()
    static_server.pages["/solo.html"] = PAGE.format(api=server.base_url).replace(
        '{types: ["commit"]}', '{types: ["commit"], share: false}'
    )
    url = f"{static_server.base_url}/solo.html"
    pages = [open_tab(context, url) for _ in range(2)]
    for page in pages:
        wait_in_page(page, "sse.isLeader && sse.connectionId !== null")
        assert page.evaluate("[sse.shared, statuses]") == [False, ["leader", "open"]]
    wait_for(lambda: server.get("/sse/stats")["active_connections"] == 2, what="two streams")
    event_id = server.publish("commit", {"n": 1})
    for page in pages:
        wait_in_page(page, "received.length === 1")
        assert received_ids(page) == [event_id]

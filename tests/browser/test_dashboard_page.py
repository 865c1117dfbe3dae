"""The dashboard in Chromium: live counters move as events are published; screenshot for the docs."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx
from browser_support import ServerThread, wait_for, wait_in_page

DOCS_SCREENSHOT = Path(__file__).parents[2] / "docs" / "img" / "dashboard.png"


def number(page: Any, element_id: str) -> float:
    text = page.text_content(f"#{element_id}") or ""
    return float(text.replace(",", "")) if text.strip() not in ("", "\N{EN DASH}") else -1.0


def publish_steadily(server: ServerThread, stop: threading.Event, published: list[int]) -> None:
    """About 100 events/s in small batches, until ``stop``: enough to move every chart."""
    types = ["commit", "file_change", "progress_update", "task_update"]
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        n = 0
        while not stop.wait(0.05):
            batch = [
                {"event_type": types[(n + i) % 4], "data": {"n": n + i, "progress": (n + i) % 4 * 25}} for i in range(5)
            ]
            assert http.post("/sse/publish", json={"events": batch}).status_code == 202
            n += len(batch)
            published[0] = n


def test_dashboard_counters_move_after_events_are_published(context, server_factory) -> None:
    server = server_factory()
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{server.base_url}/sse/dashboard")
    wait_in_page(page, "Number(document.body.dataset.ticks || 0) >= 1")
    assert page.text_content("#status") == "live"
    assert number(page, "v-published") == 0
    # A few subscribers besides the page's own "last events" stream, so the connection chart has a value.
    page.evaluate("for (let i = 0; i < 3; i++) new EventSource('events?types=commit')")
    wait_for(lambda: server.get("/sse/stats")["active_connections"] == 4, what="4 streams")

    stop, published = threading.Event(), [0]
    publisher = threading.Thread(target=publish_steadily, args=(server, stop, published))
    publisher.start()
    try:
        wait_in_page(page, "Number(document.getElementById('v-events-rate').textContent.replace(/,/g, '')) > 0")
        wait_in_page(page, "Number(document.getElementById('v-deliveries-rate').textContent.replace(/,/g, '')) > 0")
        wait_in_page(page, "Number(document.body.dataset.ticks) >= 8")
    finally:
        stop.set()
        publisher.join(5)
    total = published[0]
    assert total > 0
    wait_in_page(page, f"Number(document.getElementById('v-published').textContent.replace(/,/g, '')) === {total}")
    assert number(page, "v-active") == 4
    assert number(page, "v-delivered") >= total  # the page's own stream receives every event
    assert page.locator("#events tr").count() == 50  # the table keeps the last 50
    newest_type = page.text_content("#events tr:first-child td.type")
    assert newest_type in ("commit", "file_change", "progress_update", "task_update")
    # This rendering is the docs' picture (README, docs/dashboard.md): every run refreshes
    # it, so it always shows the page as it is. Commit it when the dashboard changes.
    target = DOCS_SCREENSHOT
    target.parent.mkdir(parents=True, exist_ok=True)
    target.unlink(missing_ok=True)
    page.screenshot(path=str(target))  # the viewport: charts and the newest events
    assert target.stat().st_size > 10_000  # this run's rendering, not a blank page
    assert errors == []

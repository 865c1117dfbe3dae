"""A trio program that runs a trio_sse hub in-process and publishes its own progress.

Run it:

    .venv/bin/python examples/embedded_app.py          # port from TRIO_SSE_PORT, else 8000
    .venv/bin/python examples/embedded_app.py 8766     # or the port as the first argument

and watch it:

    curl -N localhost:8766/sse/events?types=progress_update

Every other trio_sse setting is read as usual (TRIO_SSE_* environment variables,
TRIO_SSE_CONFIG). Stop it with Ctrl-C or SIGTERM: the server stops accepting,
every stream ends with a final chunk, the publisher stops, and the hub closes.
"""

from __future__ import annotations

import logging
import sys

import trio

import trio_sse


async def report_progress(hub: trio_sse.Hub) -> None:
    """Publish a progress_update every second until the hub starts shutting down."""
    step = 0
    while not hub.closing:
        event_id = await hub.publish(
            "progress_update",
            {"task": "demo", "step": step, "progress": step % 101},
            project_id="demo",
        )
        logging.getLogger("example").info("published %s (step %d)", event_id, step)
        step += 1
        await trio.sleep(1)


async def main(port: str | None) -> None:
    # Flags beat TRIO_SSE_* env vars, which beat TRIO_SSE_CONFIG, which beats the profile.
    settings = trio_sse.load_settings({"port": port} if port else None)
    async with trio_sse.open_hub(settings) as hub:
        app = trio_sse.create_app(hub=hub)
        # The nursery sits inside the hub block, so the server and the publisher
        # have stopped before the hub closes.
        async with trio.open_nursery() as nursery:
            # serve() returns on SIGTERM/SIGINT, after ending every stream.
            binds = await nursery.start(trio_sse.serve, app, settings)
            print("serving on", ", ".join(binds), flush=True)
            nursery.start_soon(report_progress, hub)
    print("hub closed", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    trio.run(main, sys.argv[1] if len(sys.argv) > 1 else None)

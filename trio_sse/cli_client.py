"""What ``trio-sse tail`` and ``trio-sse publish`` do, on top of :mod:`trio_sse.client`.

Kept apart from :mod:`trio_sse.cli` so that ``trio-sse serve`` does not import httpx
and rich. Output rules: ``tail`` writes events to stdout (pretty on a terminal, one
JSON object per line otherwise) and everything else — reconnections, errors — to
stderr, so a pipe only ever sees events.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, TextIO

import httpx
import orjson
from rich.console import Console
from rich.highlighter import JSONHighlighter
from rich.logging import RichHandler
from rich.text import Text

from .client import Event, SSEClientError, SSEHTTPError, connect, publish, redacted

__all__ = ["CommandFailed", "EventPrinter", "run_publish", "run_tail"]

SYSTEM_STYLE = {"connected": "green", "subscription_updated": "cyan", "stream_reset": "bold red"}


class CommandFailed(Exception):
    """A failure to report on stderr (the message) before exiting with status 1."""


def _data_value(event: Event) -> Any:
    """The event's data as JSON if it is JSON (trio_sse data always is), else the raw text."""
    try:
        return event.json()
    except orjson.JSONDecodeError:
        return event.data


class EventPrinter:
    """Writes events as JSON lines (``pretty=False``) or as coloured lines with rich."""

    def __init__(self, pretty: bool, stream: TextIO | None = None) -> None:
        self.pretty = pretty
        self.stream = stream or sys.stdout
        self.console = Console(file=self.stream, highlight=False, soft_wrap=True)
        self.highlight = JSONHighlighter()

    def __call__(self, event: Event) -> None:
        if self.pretty:
            self._pretty(event)
        else:
            line = {"event": event.type, "id": event.id, "data": _data_value(event)}
            self.stream.write(orjson.dumps(line).decode() + "\n")
            self.stream.flush()  # one line per event, as it arrives, even in a pipe

    def _pretty(self, event: Event) -> None:
        style = SYSTEM_STYLE.get(event.type, "bold yellow")
        prefix = Text.assemble(
            (time.strftime("%H:%M:%S "), "dim"),
            (event.type, style),
            (f" {event.id}" if event.id else "", "dim"),
            " ",
        )
        data = _data_value(event)
        body = orjson.dumps(data).decode() if not isinstance(data, str) else data
        self.console.print(prefix + self.highlight(Text(body)))


def setup_logging(pretty: bool, quiet: bool) -> None:
    """Reconnection notices of :mod:`trio_sse.client` go to stderr (never to stdout)."""
    handler: logging.Handler
    if pretty:
        handler = RichHandler(console=Console(stderr=True), show_path=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("trio_sse.client")
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.INFO)


def describe(error: BaseException, url: str) -> str:
    """A one-paragraph explanation of a client failure, with the server's JSON error if any."""
    if isinstance(error, SSEHTTPError):
        return f"error: {error}\n{error.text.strip()}" if error.text.strip() else f"error: {error}"
    if isinstance(error, httpx.RequestError):
        return f"error: cannot reach {redacted(httpx.URL(url))}: {error!r}"
    return f"error: {error}"


async def run_tail(url: str, printer: EventPrinter, *, max_events: int | None, **options: Any) -> int:
    """Print events until ``max_events`` non-system events were printed (or forever).

    Returns how many non-system events were printed. Raises :class:`CommandFailed` when
    the stream is refused for good (HTTP 4xx, not an event stream).
    """
    count = 0
    if max_events == 0:
        return 0
    try:
        async with connect(url, **options) as source:
            async for event in source:
                printer(event)
                if not event.is_system:
                    count += 1
                    if max_events is not None and count >= max_events:
                        break
    except SSEClientError as exc:
        raise CommandFailed(describe(exc, url)) from None
    return count


async def run_publish(url: str, event_type: str, data: Any, **options: Any) -> str:
    """Publish one event and return its id; :class:`CommandFailed` on any refusal or network error."""
    try:
        return await publish(url, event_type, data, **options)
    except (SSEHTTPError, httpx.RequestError) as exc:
        raise CommandFailed(describe(exc, url)) from None

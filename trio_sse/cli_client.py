"""What ``trio-sse tail`` and ``trio-sse publish`` do, on top of :mod:`trio_sse.client`.

Kept apart from :mod:`trio_sse.cli` so that ``trio-sse serve`` does not import httpx
and rich. Output rules: ``tail`` writes events to stdout (pretty on a terminal, one
JSON object per line otherwise) and everything else — reconnections, errors — to
stderr, so a pipe only ever sees events.
"""

from __future__ import annotations

import logging
import ssl
import sys
import time
from collections.abc import Iterator
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


# -- TLS -------------------------------------------------------------------------------
#
# httpx reports a failed TLS handshake as ``ConnectError('')``: the reason (certificate
# verify failed, and why) is an ``ssl.SSLError`` further down the exception chain
# (httpx <- httpcore <- trio.BrokenResourceError <- ssl). The commands dig it out and
# say how to trust the server's CA, since that is the usual fix.

#: OpenSSL verify codes meaning "issued by a CA this client does not trust" (X509_V_ERR_*):
#: unable to get issuer certificate (locally), self-signed leaf or chain, cannot verify leaf.
_UNTRUSTED_ISSUER = {2, 18, 19, 20, 21}
_HOSTNAME_MISMATCH = 62
CA_HINT = (
    "hint: if the server's certificate comes from your own CA, give that CA's certificate (PEM) "
    "with --cacert FILE or the SSL_CERT_FILE=FILE environment variable (without either, "
    "the certifi CA bundle is used, not the system's)"
)


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def ssl_error(error: BaseException) -> ssl.SSLError | None:
    """The ``ssl.SSLError`` behind an httpx transport error, if the TLS layer caused it."""
    return next((e for e in _chain(error) if isinstance(e, ssl.SSLError)), None)


def describe_tls(error: ssl.SSLError) -> str:
    """The TLS reason in words ("certificate verify failed: ..."), and a hint on the next line when one applies."""
    if isinstance(error, ssl.SSLCertVerificationError):
        reason = f"certificate verify failed: {error.verify_message}"
        if error.verify_code == _HOSTNAME_MISMATCH:
            return f"{reason}\nhint: use the host name the certificate was issued for in the URL"
        if error.verify_code in _UNTRUSTED_ISSUER:
            return f"{reason}\n{CA_HINT}"
        return reason
    return f"TLS handshake failed: {error}"


def describe(error: BaseException, url: str) -> str:
    """A one-paragraph explanation of a client failure, with the server's JSON error if any."""
    if isinstance(error, SSEHTTPError):
        return f"error: {error}\n{error.text.strip()}" if error.text.strip() else f"error: {error}"
    if isinstance(error, httpx.RequestError):
        tls = ssl_error(error)
        if tls is not None:
            return f"error: cannot reach {redacted(httpx.URL(url))}: {describe_tls(tls)}"
        return f"error: cannot reach {redacted(httpx.URL(url))}: {error!r}"
    return f"error: {error}"


class _TlsFailed(Exception):
    """A certificate the client will never accept, before any stream worked (internal)."""

    def __init__(self, error: httpx.RequestError) -> None:
        super().__init__(str(error))
        self.error = error


class _TlsReportingClient(httpx.AsyncClient):
    """httpx's client, with TLS failures that say why.

    ``trio-sse tail`` retries network errors forever, which would retry a certificate
    that can never verify forever too, logging ``ConnectError('')`` each time. So a
    verification failure before any request succeeded ends the command (with the
    reason and the hint); after that (a certificate changed under a running tail) it is
    retried like any network error, with the reason in the log line. A subclass rather
    than a transport: the client keeps building its own transports, so proxies from the
    environment (``HTTPS_PROXY``...) still apply.
    """

    _answered = False

    async def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        try:
            response = await super().send(request, **kwargs)
        except httpx.RequestError as exc:
            tls = ssl_error(exc)
            if tls is None:
                raise
            if isinstance(tls, ssl.SSLCertVerificationError) and not self._answered:
                raise _TlsFailed(exc) from exc
            raise httpx.ConnectError(describe_tls(tls).replace("\n", "; "), request=request) from exc
        self._answered = True
        return response


def tls_context(cacert: str | None) -> ssl.SSLContext | bool:
    """What httpx verifies against: ``cacert`` alone when given, else httpx's default
    (``SSL_CERT_FILE`` or ``SSL_CERT_DIR`` when set, else certifi's bundle)."""
    if cacert is None:
        return True
    try:
        return ssl.create_default_context(cafile=cacert)
    except (OSError, ssl.SSLError) as exc:
        raise CommandFailed(f"error: cannot load the CA bundle {cacert}: {exc}") from None


async def run_tail(
    url: str, printer: EventPrinter, *, max_events: int | None, cacert: str | None = None, **options: Any
) -> int:
    """Print events until ``max_events`` non-system events were printed (or forever).

    Returns how many non-system events were printed. Raises :class:`CommandFailed` when
    the stream is refused for good (HTTP 4xx, not an event stream, a server certificate
    that does not verify on the first connection). ``cacert``: a PEM CA bundle to verify
    the server against.
    """
    count = 0
    if max_events == 0:
        return 0
    try:
        async with (
            _TlsReportingClient(verify=tls_context(cacert)) as http,
            connect(url, http=http, **options) as source,
        ):
            async for event in source:
                printer(event)
                if not event.is_system:
                    count += 1
                    if max_events is not None and count >= max_events:
                        break
    except SSEClientError as exc:
        raise CommandFailed(describe(exc, url)) from None
    except _TlsFailed as exc:
        raise CommandFailed(describe(exc.error, url)) from None
    return count


async def run_publish(url: str, event_type: str, data: Any, *, cacert: str | None = None, **options: Any) -> str:
    """Publish one event and return its id; :class:`CommandFailed` on any refusal or network error."""
    try:
        async with _TlsReportingClient(verify=tls_context(cacert)) as http:
            return await publish(url, event_type, data, http=http, **options)
    except (SSEHTTPError, httpx.RequestError) as exc:
        raise CommandFailed(describe(exc, url)) from None
    except _TlsFailed as exc:
        raise CommandFailed(describe(exc.error, url)) from None

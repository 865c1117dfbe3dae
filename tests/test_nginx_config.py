"""The nginx configs users copy, checked with a real nginx.

- ``docs/running.md``'s site file passes ``nginx -t`` as written (included in an http
  block, as nginx.conf includes conf.d/), and so does its TLS variant (with a
  certificate made here for the paths the page names).
- While trio_sse is down, the stream locations of that file and of the config
  ``scripts/cluster`` renders close the connection without an answer (a browser's
  EventSource retries after a network error, but closes for good on a 502), and the
  JSON endpoints keep nginx's 502. tests/browser/test_nginx_outage.py checks what
  Chromium makes of it.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from nginx_support import Nginx, docs_nginx_blocks, local_site, render_cluster_config, with_tls, wrap_site
from redis_server import free_port


def test_the_documented_site_file_passes_nginx_t_as_written(tmp_path: Path) -> None:
    site = docs_nginx_blocks()["site"]
    result = Nginx(tmp_path, wrap_site(tmp_path, site)).test()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_the_documented_tls_lines_pass_nginx_t_with_a_certificate_at_their_paths(tmp_path: Path) -> None:
    # The page's paths (/etc/letsencrypt/...) point at a certificate made for this test.
    site = with_tls(docs_nginx_blocks(), tmp_path, host="events.example.com")
    result = Nginx(tmp_path, wrap_site(tmp_path, site)).test()
    assert result.returncode == 0, result.stderr


def started(kind: str, prefix: Path, listen: int, upstream: int) -> Nginx:
    if kind == "docs/running.md":
        config = wrap_site(prefix, local_site(docs_nginx_blocks()["site"], listen, upstream))
    else:
        config = render_cluster_config(prefix, listen, [upstream])
    nginx = Nginx(prefix, config)
    checked = nginx.test()
    assert checked.returncode == 0, checked.stderr
    return nginx.start(listen)


@pytest.mark.parametrize("kind", ["docs/running.md", "scripts/cluster"])
def test_while_trio_sse_is_down_streams_get_a_closed_connection_and_json_endpoints_502(
    kind: str, tmp_path: Path
) -> None:
    listen, upstream = free_port(), free_port()  # nothing listens on upstream
    nginx = started(kind, tmp_path, listen, upstream)
    try:
        base = f"http://127.0.0.1:{listen}"
        with httpx.Client(base_url=base, timeout=5) as http:
            for path in ("/sse/events", "/sse/events?types=commit", "/sse/stats/stream"):
                with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                    http.get(path, headers={"Accept": "text/event-stream", "Last-Event-ID": "1-0"})
            assert http.get("/sse/health").status_code == 502
            assert http.get("/sse/stats").status_code == 502
            assert http.post("/sse/publish", json={"event_type": "commit", "data": 1}).status_code == 502
        # What nginx logged: 444 (closed, nothing sent) for the streams, 502 for the rest.
        logged = re.findall(r'"[A-Z]+ (\S+) HTTP/1.1" (\d{3})', nginx.access_log())
        assert logged == [
            ("/sse/events", "444"),
            ("/sse/events?types=commit", "444"),
            ("/sse/stats/stream", "444"),
            ("/sse/health", "502"),
            ("/sse/stats", "502"),
            ("/sse/publish", "502"),
        ], nginx.access_log()
    finally:
        nginx.stop()

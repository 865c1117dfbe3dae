"""A real nginx (Debian's package) on 127.0.0.1 for the tests, with a prefix of its own.

The configs under test are the ones users copy: the site file of ``docs/running.md``
(its ``nginx`` code blocks, read from the page) and the template ``scripts/cluster``
renders. nginx runs in the foreground in its own session, with its pid file, logs and
temp paths in the test's directory, and is stopped (its workers too) when the test ends.
nginx missing is an error, not a skip: ``./scripts/test`` installs it.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

__all__ = [
    "CLUSTER_TEMPLATE",
    "NGINX",
    "Nginx",
    "docs_nginx_blocks",
    "local_site",
    "render_cluster_config",
    "with_tls",
    "wrap_site",
]

REPO = Path(__file__).resolve().parents[1]
RUNNING_MD = REPO / "docs" / "running.md"
CLUSTER_TEMPLATE = REPO / "scripts" / "cluster.d" / "nginx.conf.template"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

#: The first line of each nginx code block of docs/running.md#behind-nginx the tests use.
DOC_BLOCKS = {
    "site": "# /etc/nginx/conf.d/trio-sse.conf",
    "tls": "# HTTPS: instead of",
}


def docs_nginx_blocks() -> dict[str, str]:
    """The site file and the TLS lines of docs/running.md, exactly as the page shows them."""
    text = RUNNING_MD.read_text()
    section = text[text.index("\n## Behind nginx\n") :]
    section = section[: section.index("\n## ", 1)]
    blocks = re.findall(r"^```nginx\n(.*?)^```$", section, flags=re.MULTILINE | re.DOTALL)
    found = {}
    for name, first_line in DOC_BLOCKS.items():
        matching = [block for block in blocks if block.startswith(first_line)]
        assert len(matching) == 1, f"docs/running.md#behind-nginx: one nginx block must start with {first_line!r}"
        found[name] = matching[0]
    return found


def wrap_site(prefix: Path, site: str) -> str:
    """A main nginx.conf that includes ``site`` in its http block, as nginx.conf includes
    conf.d/*.conf, with everything nginx writes kept under ``prefix``."""
    (prefix / "site.conf").write_text(site)
    temp = prefix / "tmp"
    temp.mkdir(exist_ok=True)
    return f"""
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include {prefix}/site.conf;
}}
"""


def render_cluster_config(prefix: Path, lb_port: int, upstream_ports: list[int], read_timeout: int = 120) -> str:
    """The template rendered as ``scripts/cluster`` renders it (its sed substitutions)."""
    servers = "".join(f"server 127.0.0.1:{port} max_fails=1 fail_timeout=5s; " for port in upstream_ports)
    (prefix / "nginx-tmp").mkdir(exist_ok=True)
    text = CLUSTER_TEMPLATE.read_text()
    for placeholder, value in {
        "@LB_PORT@": str(lb_port),
        "@PREFIX@": str(prefix),
        "@SERVERS@": servers,
        "@READ_TIMEOUT@": str(read_timeout),
    }.items():
        text = text.replace(placeholder, value)
    assert not re.search(r"@[A-Z_]+@", text), "a placeholder of the template was left"
    return text


def local_site(site: str, listen_port: int, upstream_port: int) -> str:
    """The documented site file, listening on 127.0.0.1:``listen_port`` with trio_sse on ``upstream_port``."""
    site, listens = re.subn(r"^(\s*listen )(80|443)\b", rf"\g<1>127.0.0.1:{listen_port}", site, flags=re.MULTILINE)
    assert listens == 1 and "server 127.0.0.1:8000;" in site
    return site.replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};")


def with_tls(blocks: dict[str, str], directory: Path, host: str = "127.0.0.1") -> str:
    """The documented site file with the documented TLS lines instead of ``listen 80;``,
    their certificate paths pointing at a trustme certificate for ``host`` made in ``directory``."""
    import trustme

    cert = trustme.CA().issue_cert(host)
    files = {"ssl_certificate": directory / "fullchain.pem", "ssl_certificate_key": directory / "privkey.pem"}
    for pem in cert.cert_chain_pems:
        pem.write_to_path(str(files["ssl_certificate"]), append=True)
    cert.private_key_pem.write_to_path(str(files["ssl_certificate_key"]))
    tls = blocks["tls"]
    for directive, path in files.items():
        tls, count = re.subn(rf"^({directive}\s+)\S+;", rf"\g<1>{path};", tls, flags=re.MULTILINE)
        assert count == 1, f"the TLS block names no {directive}"
    assert blocks["site"].count("listen 80;") == 1
    return blocks["site"].replace("listen 80;", tls)


class Nginx:
    """nginx with the main config ``config``, its files in ``prefix``."""

    def __init__(self, prefix: Path, config: str) -> None:
        if not os.path.exists(NGINX):
            raise RuntimeError(f"nginx not found at {NGINX} (./scripts/test installs Debian's package)")
        self.prefix = prefix
        self.conf = prefix / "nginx.conf"
        self.conf.write_text(config)
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url = ""

    def command(self, *extra: str) -> list[str]:
        # -e: the error log of start-up, before the config names its own, stays here too.
        return [NGINX, "-p", f"{self.prefix}/", "-e", str(self.prefix / "error.log"), "-c", str(self.conf), *extra]

    def test(self) -> subprocess.CompletedProcess[str]:
        """``nginx -t``: the config's syntax, and every file it names (certificates...)."""
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=30)

    def start(self, port: int) -> Nginx:
        """Run nginx (its config says ``daemon off``) until :meth:`stop`; return once ``port`` accepts connections."""
        log = (self.prefix / "nginx.out").open("wb")
        self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}: {self.output()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return self
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"nginx does not listen on {port}: {self.output()}") from None
                time.sleep(0.02)

    def output(self) -> str:
        return "\n".join(
            path.read_text(errors="replace")
            for path in (self.prefix / "nginx.out", self.prefix / "error.log")
            if path.exists()
        )

    def access_log(self) -> str:
        paths = [self.prefix / "access.log", self.prefix / "nginx-access.log"]  # wrap_site's, the cluster's
        return "".join(path.read_text(errors="replace") for path in paths if path.exists())

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown), then SIGKILL for the whole group if it lingers."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # workers left behind, if any
        except ProcessLookupError:
            pass
        process.wait(timeout=10)

"""hypercorn's and quart-trio's internals are reached from one module only (issue 12).

``trio_sse/http/hypercorn_trio.py`` is checked against the pinned releases by
``tests/http/test_transport_conformance.py``; any other module naming what hypercorn does
not promise would break silently on its next release. ``server.py`` may import the adapter.
"""

from __future__ import annotations

import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "trio_sse"
ADAPTER = PACKAGE / "http" / "hypercorn_trio.py"

#: What only the adapter may name: the bound-method walk, hypercorn's private objects and
#: attributes, any import from hypercorn, and quart-trio's submodules (its ASGI classes).
PRIVATE = re.compile(
    r"__self__|\bstream_buffers\b|\bTCPServer\b|\bH2Protocol\b|\bH11Protocol\b|\bHTTPStream\b"
    r"|\bProtocolWrapper\b|\bTrioASGILifespan\b|\bWorkerContext\b"
    r"|^\s*(?:from|import)\s+hypercorn\b|^\s*from\s+quart_trio\.\w",
    re.MULTILINE,
)


def offenders(root: Path) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        if path == ADAPTER:
            continue
        text = path.read_text()
        for match in PRIVATE.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"{path.relative_to(root.parent)}:{line}: {match.group().strip()}")
    return found


def test_only_the_adapter_reaches_into_hypercorn_or_quart_trio() -> None:
    assert offenders(PACKAGE) == []


def test_the_check_sees_a_walk_outside_the_adapter(tmp_path: Path) -> None:
    package = tmp_path / "trio_sse"
    (package / "http").mkdir(parents=True)
    (package / "http" / "fastpath.py").write_text("obj = send.__self__\nfrom hypercorn.config import Config\n")
    assert offenders(package) == [
        "trio_sse/http/fastpath.py:1: __self__",
        "trio_sse/http/fastpath.py:2: from hypercorn",
    ]

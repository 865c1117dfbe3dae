"""The layers hold: what each part of ``trio_sse`` may import, name and weigh.

``core`` knows nothing of ``runtime``, ``runtime`` nothing of ``http`` (no import of it,
no HTTP status: the http layer maps reasons to statuses), ``settings`` nothing of
``runtime``; the client, the core and the test kit load neither hypercorn nor quart; and
no module of ``runtime`` carries more than one job's worth of lines.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_sse.http.errors import REFUSALS, refusal_error
from trio_sse.runtime.admission import ConnectionRefused, Refusal
from trio_sse.runtime.backends import make_backend
from trio_sse.settings import Settings, SettingsError

PACKAGE = Path(__file__).resolve().parent.parent / "trio_sse"
#: Modules of ``trio_sse/runtime/`` exempt from :data:`MAX_RUNTIME_LINES` while another
#: change reshapes them. Empty since the stream state machine (issue 12) landed and
#: connection.py came under the bound; keep it empty.
LINE_LIMIT_PENDING: list[str] = []
MAX_RUNTIME_LINES = 400
#: Integers that, written in runtime or core, would be an HTTP status.
HTTP_STATUSES = frozenset(range(400, 600))


def _modules(*parts: str) -> list[Path]:
    return sorted(PACKAGE.joinpath(*parts).rglob("*.py"))


def _imported(tree: ast.AST, module: Path) -> list[str]:
    """Every module ``tree`` imports, as absolute dotted names (relative ones resolved)."""
    package = ["trio_sse", *module.relative_to(PACKAGE).parent.parts]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join([*base, node.module] if node.module else base)
            names.append(stem)
            names.extend(f"{stem}.{alias.name}" for alias in node.names)
    return names


def _status_literals(tree: ast.AST) -> list[tuple[int, int]]:
    """``(line, value)`` of every int literal in the HTTP status range."""
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and type(node.value) is int and node.value in HTTP_STATUSES
    ]


@pytest.mark.parametrize("layer", ["runtime", "core"])
def test_runtime_and_core_import_no_http_and_name_no_status(layer: str) -> None:
    offences = []
    for module in _modules(layer):
        tree = ast.parse(module.read_text(), str(module))
        for name in _imported(tree, module):
            if name == "trio_sse.http" or name.startswith("trio_sse.http."):
                offences.append(f"{module.name}: imports {name}")
            if name in ("http", "http.HTTPStatus") or name.startswith("http."):
                offences.append(f"{module.name}: imports {name}")
            for framework in ("quart", "hypercorn", "werkzeug"):
                if name == framework or name.startswith(framework + "."):
                    offences.append(f"{module.name}: imports {name}")
        offences.extend(f"{module.name}:{line}: HTTP status {value}" for line, value in _status_literals(tree))
        offences.extend(
            f"{module.name}:{node.lineno}: HTTPStatus"
            for node in ast.walk(tree)
            if isinstance(node, ast.Name | ast.Attribute)
            and (node.id if isinstance(node, ast.Name) else node.attr) == "HTTPStatus"
        )
    assert offences == []


def test_settings_imports_nothing_from_runtime_or_http() -> None:
    module = PACKAGE / "settings.py"
    names = _imported(ast.parse(module.read_text()), module)
    assert [n for n in names if n.startswith(("trio_sse.runtime", "trio_sse.http"))] == []


def test_no_runtime_module_is_over_400_lines() -> None:
    lengths = {
        str(module.relative_to(PACKAGE / "runtime")): len(module.read_text().splitlines())
        for module in _modules("runtime")
    }
    too_long = {name: n for name, n in lengths.items() if n > MAX_RUNTIME_LINES and name not in LINE_LIMIT_PENDING}
    assert too_long == {}


@pytest.mark.parametrize("module", ["trio_sse.client", "trio_sse.core", "trio_sse.testing"])
def test_light_modules_load_neither_hypercorn_nor_quart(module: str) -> None:
    """``python -X importtime -c "import <module>"`` lists no server-side module."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    imported = [line.rsplit("|", 1)[-1].strip() for line in run.stderr.splitlines() if "|" in line]
    assert imported, run.stderr  # importtime did report
    heavy = [
        name
        for name in imported
        if name.split(".")[0] in ("hypercorn", "quart", "quart_trio", "werkzeug")
        or name.startswith(("trio_sse.http", "trio_sse.runtime", "trio_sse.app", "trio_sse.server"))
    ]
    assert heavy == []


def test_top_level_names_still_resolve() -> None:
    import trio_sse

    for name in trio_sse.__all__:
        assert getattr(trio_sse, name) is not None
    with pytest.raises(AttributeError):
        trio_sse.no_such_name  # noqa: B018


# -- one rule, one place ----------------------------------------------------------------------

_URL_PARTS = st.sampled_from(["memory", "redis://", "rediss://", "unix://", "http://", "redis:/", ""])
_URL_TAILS = st.text(alphabet="h:0123456789/abc?=.@x", max_size=16)


@given(prefix=_URL_PARTS, tail=_URL_TAILS)
def test_make_backend_and_settings_judge_a_backend_url_by_the_same_rule(prefix: str, tail: str) -> None:
    """The backend URL is checked once: ``make_backend`` refuses exactly what the settings refuse."""
    url = prefix + tail
    try:
        Settings(backend=url)
    except SettingsError as exc:
        settings_error: str | None = str(exc)
    else:
        settings_error = None
    try:
        make_backend(url, 10)
    except SettingsError as exc:
        backend_error: str | None = str(exc)
    else:
        backend_error = None
    assert backend_error == settings_error


def test_every_refusal_reason_has_a_status_and_a_retry_after() -> None:
    """The http layer's one table covers every reason the runtime can refuse with."""
    assert set(REFUSALS) == set(Refusal)
    for reason, (status, retry_after) in REFUSALS.items():
        error = refusal_error(ConnectionRefused(reason, "refused"))
        assert (error.status, error.code, error.headers) == (status, reason.value, {"Retry-After": str(retry_after)})
    # A known wait (a rate limit's bucket) is a longer Retry-After, in whole seconds.
    slow = refusal_error(ConnectionRefused(Refusal.CONNECTION_RATE, "refused", wait=7.2))
    assert (slow.status, slow.headers["Retry-After"]) == (429, "8")

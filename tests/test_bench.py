"""scripts/bench: its plan, its parsing of /proc and of its own options, and the load tool's
source addresses. The benchmark's figures are never asserted (docs/performance.md has
them); these tests keep the tooling that produces them working, and fast."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parent.parent


def _load_bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench", ROOT / "scripts" / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


# -- /proc/<pid>/stat ---------------------------------------------------------------


@given(
    comm=st.text(alphabet=st.characters(blacklist_characters="\x00\n"), max_size=15),
    utime=st.integers(0, 2**40),
    stime=st.integers(0, 2**40),
)
def test_parse_proc_stat_counts_fields_from_the_last_parenthesis(comm: str, utime: int, stime: int) -> None:
    # The command name may hold spaces and ")": fields 14 and 15 are found all the same.
    line = f"4242 ({comm}) S 1 4242 4242 0 -1 4194560 1000 0 0 0 {utime} {stime} 0 0 20 0 1 0 99 1 2 3\n"
    assert bench.parse_proc_stat(line) == (utime, stime)


def test_parse_proc_stat_reads_this_process() -> None:
    utime, stime = bench.parse_proc_stat(Path("/proc/self/stat").read_text())
    assert utime >= 0 and stime >= 0
    assert bench.proc_cpu_seconds([0]) == 0  # no such pid: counts nothing, raises nothing
    assert bench.proc_runqueue_wait_seconds([os.getpid()]) >= 0
    assert bench.proc_runqueue_wait_seconds([0]) == 0


@pytest.mark.parametrize("text", ["", "4242 (x) S 1 2 3", "no parenthesis at all 1 2 3 4 5 6 7 8 9 10 11 12 13 14"])
def test_parse_proc_stat_rejects_what_is_not_a_stat_line(text: str) -> None:
    with pytest.raises(ValueError):
        bench.parse_proc_stat(text)


# -- the scale50k plan ----------------------------------------------------------------


def test_scale_plan_skips_sizes_over_the_descriptor_limit_and_measures_the_largest_that_fits() -> None:
    run, skipped = bench.scale_plan((10_000, 25_000, 50_000), 20_000)
    assert run == (10_000, 19_500)
    assert [n for n, _ in skipped] == [25_000, 50_000]
    assert "20,000" in skipped[0][1] and "25,500" in skipped[0][1]


def test_scale_plan_runs_every_size_when_the_limit_allows() -> None:
    assert bench.scale_plan((10_000, 25_000, 50_000), 1_048_576) == ((10_000, 25_000, 50_000), ())


def test_scale_plan_measures_the_largest_fit_only_above_every_size_that_fits() -> None:
    run, skipped = bench.scale_plan((10_000, 30_000, 50_000), 40_000)
    assert run == (10_000, 30_000, 39_500)
    assert [n for n, _ in skipped] == [50_000]
    # Room for less than one step: nothing runs, every size is reported.
    run, skipped = bench.scale_plan((10_000,), 400)
    assert run == () and [n for n, _ in skipped] == [10_000]


@pytest.mark.parametrize(
    ("text", "sizes"), [("50000", (50_000,)), ("25_000, 10000,25000", (10_000, 25_000)), ("1", (1,))]
)
def test_parse_sizes_accepts_comma_separated_counts(text: str, sizes: tuple[int, ...]) -> None:
    assert bench.parse_sizes(text) == sizes


@pytest.mark.parametrize("text", ["", ",", "0", "-5", "ten", "1.5"])
def test_parse_sizes_rejects_what_is_not_a_count(text: str) -> None:
    with pytest.raises(Exception, match="stream counts"):
        bench.parse_sizes(text)


def test_quick_leaves_out_the_scale_scenarios_even_when_named() -> None:
    quick = bench.plan_scenarios(None, quick=True)
    assert quick == ["idle_memory", "latency", "fanout", "publish"]
    assert bench.plan_scenarios(["scale", "scale50k", "latency"], quick=True) == ["latency"]
    assert "scale50k" in bench.plan_scenarios(None, quick=False)


def test_bench_quick_dry_run_plans_only_the_quick_scenarios() -> None:
    # CI runs `scripts/bench --quick`: the same entry point and arguments, without the run.
    done = subprocess.run(
        [str(ROOT / "scripts" / "bench"), "--quick", "--dry-run"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert plan["scenarios"] == ["idle_memory", "latency", "fanout", "publish"]
    assert plan["params"]["quick"] is True and plan["params"]["runs"] == 1


def test_render_shows_the_cpu_ratio_and_the_sizes_not_runnable() -> None:
    params = bench.Params.make(False, 3, scale50k_sizes=(10_000, 50_000))
    figures = {
        "redis1_cpustep_cpu_s_per_m": 0.5,
        "redis2_cpustep_cpu_s_per_m": 0.55,
        "cpu_ratio_2w_1w": 1.1,
        "redis1_cpustep_sustained": 1,
    }
    run = dict(figures, load_avg=1.5)
    md = "\n".join(bench.render_workers({"runs": [run], "median": figures}, params))
    assert "| Redis backend, 2 workers | 0.550 |" in md and "| 1.10 |" in md
    assert "median 1.100" in md
    note = bench.scenario_note("scale50k", params)
    if params.nofile_hard < 50_500:
        assert "50,000 streams not runnable here" in note


# -- sseload --sources -----------------------------------------------------------------


class _OneEventServer:
    """Answers every request with an SSE stream of one stamped event; records peers."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.peers: list[str] = []
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, (host, _) = self.listener.accept()
            except OSError:
                return
            self.peers.append(host)
            self._conns.append(conn)
            conn.recv(4096)
            data = b'data: {"t":%d}\n\n' % time.time_ns()
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + data)

    def close(self) -> None:
        self.listener.close()
        for conn in self._conns:
            conn.close()


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (the benchmark builds its tools)")
def test_sseload_binds_each_stream_to_its_source_address(tmp_path: Path) -> None:
    exe = tmp_path / "sseload"
    cc = subprocess.run(
        ["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(ROOT / "scripts" / "sseload.c")],
        capture_output=True,
        text=True,
    )
    assert cc.returncode == 0, cc.stderr
    server = _OneEventServer()
    try:
        argv = [str(exe), "--host", "127.0.0.1", "--port", str(server.port), "--path", "/", "--conns", "6"]
        argv += ["--duration", "0.3", "--sources", "3", "--source-base", "127.0.0.2"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    finally:
        server.close()
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert sorted(server.peers) == ["127.0.0.2"] * 2 + ["127.0.0.3"] * 2 + ["127.0.0.4"] * 2
    assert result["open"] == 6 and result["events"] == 6 and result["sources"] == 3
    # The histogram holds every latency sample, so runs of several processes merge exactly.
    assert sum(count for _, count in result["hist_ms"]) == 6


def test_companion_scenarios_are_full_run_only_and_their_output_is_the_report_table() -> None:
    assert {"replay", "publisher"} <= set(bench.plan_scenarios(None, quick=False))
    assert not {"replay", "publisher"} & set(bench.plan_scenarios(None, quick=True))
    for scenario, commands in bench.COMPANIONS.items():
        assert scenario in bench.SCENARIO_TITLES
        for argv in commands:
            assert (ROOT / argv[0]).is_file(), argv  # a renamed companion script fails here, not mid-run
    res = {"companion": [{"command": "scripts/bench_replay.py --history 100000", "stdout": "a | b\n", "elapsed_s": 3}]}
    assert bench.render_companion(res) == [
        "`scripts/bench_replay.py --history 100000` (3 s):",
        "",
        "```text",
        "a | b",
        "```",
        "",
    ]

"""The end-of-run check of conftest.py: a process started by the tests that outlives them fails the run.

Checked on a tiny project run by pytest in a subprocess (in-process, the check would see
this run's own servers), with this repository's hooks.
"""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

REPO = Path(__file__).resolve().parents[1]

CONFTEST = f"""
import importlib.util

spec = importlib.util.spec_from_file_location("repo_conftest", {str(REPO / "conftest.py")!r})
repo = importlib.util.module_from_spec(spec)
spec.loader.exec_module(repo)
repo.LEAK_GRACE = 0.5  # the processes below never exit by themselves
pytest_configure = repo.pytest_configure
pytest_sessionfinish = repo.pytest_sessionfinish
"""

LEAKY = """
import subprocess

def test_leaks_a_child_and_an_orphan(tmp_path):
    child = subprocess.Popen(["sleep", "61"])
    # The shell exits at once: its sleep is an orphan, re-parented away from pytest
    # unless pytest is its subreaper (hypercorn's worker after a SIGKILLed main process).
    script = "sleep 62 >/dev/null 2>&1 </dev/null & echo $!"
    orphan = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    with open("pids", "w") as f:
        f.write(f"{child.pid} {orphan.stdout.strip()}")
"""

TIDY = """
import subprocess

def test_waits_for_its_child():
    child = subprocess.Popen(["sleep", "63"])
    child.kill()
    child.wait()
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_process_left_running_fails_the_run_and_is_named_and_killed(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(LEAKY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*leaked processes*", "2 process(es) started by the tests outlived the suite*", "*sleep 6[12]", "*sleep 6[12]"]
    )
    pids = [int(pid) for pid in (pytester.path / "pids").read_text().split()]
    assert len(pids) == 2 and all(gone(pid) for pid in pids), pids


def test_a_run_whose_processes_all_ended_passes(pytester: pytest.Pytester) -> None:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(TIDY)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=60)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert "leaked processes" not in result.stdout.str()

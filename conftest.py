"""Loads the trio_sse pytest plugin when pytest did not, for every test path of this repository,
and fails the run when a process started by the tests outlives them.

Installed (``pip install -e .``, as ``scripts/test`` does), the plugin comes through its
``pytest11`` entry point like in any user's project. Running from a checkout whose
installed metadata predates the entry point (or with ``PYTHONPATH=.`` and no install,
or with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``) it would be missing and every test using
``sse_client`` would fail to find its fixture; registering it here covers that without
ever registering it twice (pytest refuses one plugin under two names).

The tests start real servers (trio-sse serve, hypercorn and its workers, redis-server,
nginx, Chromium). One that survives its test keeps a port and memory after the run and
can answer the next run's requests, so a leak is a failure of the run, not a nuisance:
see :func:`pytest_sessionfinish`.
"""

from __future__ import annotations

import ctypes
import sys

import psutil
import pytest
from hypothesis import settings as hypothesis_settings

import trio_sse.pytest_plugin

# pytester: tests/test_testing_kit.py runs a user's project through pytest in-process.
pytest_plugins = ["pytester"]

# No per-example deadline: on a shared 2-core machine an example's first call (an import,
# a cold cache) can take 300 ms, and a deadline then fails on the machine, not the code.
# Costs that must stay linear have tests of their own that measure them.
hypothesis_settings.register_profile("trio_sse", deadline=None)
hypothesis_settings.load_profile("trio_sse")

#: Seconds the suite's children get to exit after the last test (a browser or a server
#: stopped by the last fixture may still be on its way out).
LEAK_GRACE = 5.0


PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


def become_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux).

    A process whose parent dies is re-parented to init, out of sight of
    ``children(recursive=True)``: hypercorn's worker, once a test SIGKILLed hypercorn's
    main process, or nginx's worker after its master. As a subreaper, pytest adopts them
    instead, so the check at the end of the run sees every process the tests started.
    """
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.is_registered(trio_sse.pytest_plugin):
        config.pluginmanager.register(trio_sse.pytest_plugin, "trio_sse")
    become_subreaper()


def _describe(process: psutil.Process) -> str:
    try:
        command = " ".join(process.cmdline())[:200] or process.name()
    except psutil.Error:
        command = "?"
    return f"pid {process.pid}: {command}"


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE  # a zombie has exited; only its entry is left
    except psutil.NoSuchProcess:
        return False


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the run if a child process of pytest is still running once every fixture is torn down.

    Session fixtures are finalised with the last test, before this hook. The children get
    :data:`LEAK_GRACE` to exit; those still running are named in the failure, then
    killed so they do not outlive the run either.
    """
    children = psutil.Process().children(recursive=True)
    _, alive = psutil.wait_procs(children, timeout=LEAK_GRACE)
    left = [process for process in alive if _alive(process)]
    if not left:
        return
    lines = [_describe(process) for process in left]
    for process in left:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=5)
    message = f"{len(left)} process(es) started by the tests outlived the suite (now killed):\n  " + "\n  ".join(lines)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_sep("=", "leaked processes", red=True, bold=True)
        reporter.write_line(message)
    else:  # pragma: no cover - -p no:terminal
        print(message)
    if session.exitstatus == pytest.ExitCode.OK or session.exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED

"""Loads the trio_sse pytest plugin when pytest did not, for every test path of this repository.

Installed (``pip install -e .``, as ``scripts/test`` does), the plugin comes through its
``pytest11`` entry point like in any user's project. Running from a checkout whose
installed metadata predates the entry point (or with ``PYTHONPATH=.`` and no install,
or with ``PYTEST_DISABLE_PLUGIN_AUTOLOAD``) it would be missing and every test using
``sse_client`` would fail to find its fixture; registering it here covers that without
ever registering it twice (pytest refuses one plugin under two names).
"""

from __future__ import annotations

import pytest

import trio_sse.pytest_plugin

# pytester: tests/test_testing_kit.py runs a user's project through pytest in-process.
pytest_plugins = ["pytester"]


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.is_registered(trio_sse.pytest_plugin):
        config.pluginmanager.register(trio_sse.pytest_plugin, "trio_sse")

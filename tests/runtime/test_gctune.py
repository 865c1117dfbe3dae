"""The server's GC settings (checked in a subprocess: they change process-wide state)."""

from __future__ import annotations

import subprocess
import sys

from trio_sse.runtime.gctune import SERVER_GC_THRESHOLDS


def test_tune_gc_sets_the_server_thresholds_and_freezes_start_up_objects() -> None:
    code = (
        "import gc; from trio_sse.runtime.gctune import tune_gc; tune_gc(); "
        "print(gc.get_threshold(), gc.get_freeze_count() > 0)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"{SERVER_GC_THRESHOLDS} True"


def test_young_collections_stay_frequent_enough_to_bound_churn_garbage() -> None:
    # (100000, 50, 100) let the cyclic garbage of churned connections grow RSS by 22 %
    # in the churn soak; a young generation of at most 10,000 keeps it at ~3 %.
    young, middle, old = SERVER_GC_THRESHOLDS
    assert young <= 10_000 and middle * young <= 200_000 and old >= 100

"""``ferry-runtime serve`` takes the warm process out of the garbage collector's way."""

from __future__ import annotations

import json
import subprocess
import sys

from ferry_runtime.gc_tuning import GC_THRESHOLDS

PROBE = """
import gc, json
from ferry_runtime.gc_tuning import tune_gc_for_serving
before = gc.get_freeze_count()
tune_gc_for_serving()
print(json.dumps({"before": before, "after": gc.get_freeze_count(),
                  "thresholds": gc.get_threshold()}))
"""


def test_tune_gc_freezes_what_is_loaded_and_raises_the_thresholds() -> None:
    # A fresh interpreter: freezing is process-wide and must not leak into the test session.
    result = subprocess.run(
        [sys.executable, "-c", PROBE], check=True, capture_output=True, text=True, timeout=60
    )
    seen = json.loads(result.stdout)
    assert seen["before"] == 0
    assert seen["after"] > 1000  # the modules and objects alive at warm-up
    assert tuple(seen["thresholds"]) == GC_THRESHOLDS

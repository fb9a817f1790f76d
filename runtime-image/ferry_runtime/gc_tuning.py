"""The cyclic garbage collector while serving (every serving process calls this once warm)."""

from __future__ import annotations

import gc

GC_THRESHOLDS = (50_000, 20, 100)
"""Collector thresholds while serving: gen-0 runs every 50k allocations instead of 700."""


def tune_gc_for_serving() -> None:
    """Keep the cyclic garbage collector off the request path once the model is warm.

    Everything alive after warm-up (torch, the model, the servers) is long-lived: freezing it
    takes it out of every future collection, and a higher gen-0 threshold makes the remaining
    collections rare. Under load this cut the gRPC p99 at concurrency 64 from ~110 ms to ~40 ms
    in the benchmark (bench/). Requests create few reference cycles, so memory stays flat.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)

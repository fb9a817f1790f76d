"""Under overload, the model first: the threads that accept, parse and refuse requests yield the
CPU to the forward pass.

A flood of requests that are refused (queue full) costs CPU per refusal; on the cores the model
shares with the servers, the kernel would split that CPU evenly between the threads answering
refusals and the compute thread, so goodput falls with the flood. Three levers:

- ``yield_cpu``: each refusal ends with ``sched_yield``, so a runnable compute thread goes
  first. Only the refusal path calls it: free until the queue is full.
- ``shorten_switch_interval``: the compute thread, which needs the GIL briefly before and after
  each forward pass, waits at most 0.5 ms (not 5 ms) for a busy serving thread.
- ``deprioritize`` (opt-in, ``FERRY_RUNTIME_SERVING_THREAD_NICE``): raises the nice value of the
  serving threads (event loop, gRPC's threads) once the compute thread runs. Raising one's own
  nice value needs no privilege; lowering it back would, so the compute thread is started
  before and never touched; threads the serving threads start later inherit their value. It
  is permanent, so at saturation without overload it also slows the serving threads that feed
  the batches (measured: up to -24% gRPC throughput at concurrency 64): off by default.
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger(__name__)

SWITCH_INTERVAL_S = 0.0005
"""GIL switch interval while serving (Python's default is 5 ms)."""


def thread_ids() -> set[int]:
    """Native ids of this process's threads now (empty where /proc is not available)."""
    try:
        return {int(name) for name in os.listdir("/proc/self/task")}
    except OSError:  # pragma: no cover - not Linux
        return set()


def deprioritize(threads: set[int], nice: int) -> int:
    """Add ``nice`` to the scheduling niceness of ``threads``; returns how many were changed.

    Threads that ended meanwhile, or a platform without per-thread niceness, are skipped.
    """
    if nice <= 0 or not hasattr(os, "setpriority"):
        return 0
    changed = 0
    for thread in threads:
        try:
            current = os.getpriority(os.PRIO_PROCESS, thread)
            os.setpriority(os.PRIO_PROCESS, thread, min(19, current + nice))
            changed += 1
        except OSError:
            continue
    log.debug("serving threads %d: niceness +%d", changed, nice)
    return changed


def yield_cpu() -> None:
    """After refusing a request: let a runnable compute thread have the CPU first.

    Only the refusal path calls it, so it costs nothing until the queue is full; then each
    refusal gives way to the forward pass, which slows a flood of refusals, not the model.
    """
    if hasattr(os, "sched_yield"):
        os.sched_yield()


def shorten_switch_interval() -> None:
    """Let a thread waiting for the GIL get it within ``SWITCH_INTERVAL_S``."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)

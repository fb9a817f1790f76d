"""Under overload, the model first: the threads that accept, parse and refuse requests yield the
CPU to the forward pass.

A flood of requests that are refused (queue full) costs CPU per refusal; on the cores the model
shares with the servers, the kernel would split that CPU evenly between the threads answering
refusals and the compute thread, so goodput falls with the flood. ``deprioritize`` raises the
nice value of the serving threads (the event loop, gRPC's threads) once the compute thread is
running: an idle core still serves them at once, but while the model computes the kernel gives
it the larger share. Raising one's own nice value needs no privilege; lowering it back would, so
the compute thread is started before and never touched. Threads the serving threads start later
inherit their nice value.

Also, the interpreter's switch interval is shortened so the compute thread, which needs the GIL
briefly before and after each forward pass, waits at most that long for a busy serving thread.
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


def shorten_switch_interval() -> None:
    """Let a thread waiting for the GIL get it within ``SWITCH_INTERVAL_S``."""
    sys.setswitchinterval(SWITCH_INTERVAL_S)

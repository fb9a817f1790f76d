"""How many CPUs this container may really use, for torch's thread count.

torch sizes its intra-op pool from the CPUs it *sees*, which in a pod is every core of the node,
not the container's CPU limit. Oversubscribed threads thrash under a CFS quota, so when no
thread count is configured Ferry derives one from the cgroup quota and the CPU affinity mask.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1_QUOTA = Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
CGROUP_V1_PERIOD = Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us")


def quota_cpus_v2(cpu_max: str) -> float | None:
    """CPUs allowed by a cgroup v2 ``cpu.max`` line ("max 100000" or "150000 100000")."""
    parts = cpu_max.split()
    if len(parts) != 2 or parts[0] == "max":
        return None
    try:
        quota, period = int(parts[0]), int(parts[1])
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def quota_cpus_v1(quota_us: str, period_us: str) -> float | None:
    """CPUs allowed by cgroup v1 ``cfs_quota_us`` / ``cfs_period_us`` (-1 means unlimited)."""
    try:
        quota, period = int(quota_us.strip()), int(period_us.strip())
    except ValueError:
        return None
    return quota / period if quota > 0 and period > 0 else None


def usable_cpus(affinity: int, quota: float | None) -> int:
    """Threads to use: the affinity count, capped by the quota rounded up, at least one."""
    if quota is None:
        return max(1, affinity)
    return max(1, min(affinity, math.ceil(quota)))


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def detect_usable_cpus() -> int:
    """Usable CPUs of this process from its affinity mask and cgroup (v2, then v1) quota."""
    affinity = len(os.sched_getaffinity(0))
    quota: float | None = None
    if (text := _read(CGROUP_V2_CPU_MAX)) is not None:
        quota = quota_cpus_v2(text)
    elif (q := _read(CGROUP_V1_QUOTA)) is not None and (p := _read(CGROUP_V1_PERIOD)) is not None:
        quota = quota_cpus_v1(q, p)
    return usable_cpus(affinity, quota)

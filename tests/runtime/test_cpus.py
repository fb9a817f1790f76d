"""The container-aware CPU count torch's thread pool is sized from."""

from __future__ import annotations

import pytest
from ferry_runtime.cpus import detect_usable_cpus, quota_cpus_v1, quota_cpus_v2, usable_cpus


@pytest.mark.parametrize(
    ("line", "expected"),
    [("max 100000\n", None), ("150000 100000\n", 1.5), ("200000 100000", 2.0), ("junk", None)],
)
def test_cgroup_v2_quota(line: str, expected: float | None) -> None:
    assert quota_cpus_v2(line) == expected


@pytest.mark.parametrize(
    ("quota", "period", "expected"),
    [("-1\n", "100000\n", None), ("50000", "100000", 0.5), ("x", "1", None)],
)
def test_cgroup_v1_quota(quota: str, period: str, expected: float | None) -> None:
    assert quota_cpus_v1(quota, period) == expected


@pytest.mark.parametrize(
    ("affinity", "quota", "expected"),
    [(64, None, 64), (64, 1.5, 2), (64, 0.5, 1), (2, 8.0, 2), (0, None, 1)],
)
def test_usable_cpus_caps_the_node_count_by_the_quota(
    affinity: int, quota: float | None, expected: int
) -> None:
    assert usable_cpus(affinity, quota) == expected


def test_detect_usable_cpus_on_this_machine() -> None:
    import os

    assert 1 <= detect_usable_cpus() <= len(os.sched_getaffinity(0))

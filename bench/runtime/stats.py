"""Pure statistics for the benchmark: percentiles, latency summaries and safe ratios."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between closest ranks.

    Matches ``numpy.percentile(values, q)`` (its default "linear" method). Raises
    ``ValueError`` on an empty sequence or a ``q`` outside [0, 100].
    """
    if not values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within [0, 100], got {q}")
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = math.ceil(position)
    if low == high:
        return float(ordered[low])
    weight = position - low
    return float(ordered[low] * (1.0 - weight) + ordered[high] * weight)


def median(values: Sequence[float]) -> float:
    """The 50th percentile."""
    return percentile(values, 50.0)


@dataclass(frozen=True)
class LatencySummary:
    """Latency figures of one measurement, in milliseconds."""

    count: int
    mean_ms: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float


def summarize_latencies_ns(latencies_ns: Sequence[int]) -> LatencySummary:
    """Summarize request latencies given in nanoseconds."""
    if not latencies_ns:
        raise ValueError("no latencies to summarize")
    ms = sorted(v / 1e6 for v in latencies_ns)
    return LatencySummary(
        count=len(ms),
        mean_ms=sum(ms) / len(ms),
        p50_ms=percentile(ms, 50.0),
        p90_ms=percentile(ms, 90.0),
        p99_ms=percentile(ms, 99.0),
        max_ms=ms[-1],
    )


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is not
    a positive finite number."""
    if numerator is None or denominator is None:
        return None
    if not math.isfinite(denominator) or denominator <= 0.0 or not math.isfinite(numerator):
        return None
    return numerator / denominator


def throughput(completed: int, elapsed_s: float) -> float:
    """Completed requests per second; 0 for an empty or zero-length window."""
    if completed <= 0 or elapsed_s <= 0.0:
        return 0.0
    return completed / elapsed_s

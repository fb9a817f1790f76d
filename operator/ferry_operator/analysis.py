"""Pure: what a canary's pods report, and whether a step passes.

The figures come from the runtime's Prometheus metrics (``ferry_requests_total{outcome}`` and the
``ferry_request_duration_seconds`` histogram, summed over a revision's pods, see
:mod:`ferry_operator.probes`); the signature from its model metadata (``/v2/models/{m}``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ferry_operator.spec import Analysis

SERVER_ERROR_OUTCOMES = frozenset({"failed", "error", "unavailable", "queue_full"})
"""Outcomes that count against a revision: the model or the server failed the request. Client
mistakes (invalid, not_found, too_large, unsupported) count as requests, not errors."""

UNCOUNTED_OUTCOMES = frozenset({"disconnected"})
"""Requests the client gave up on: neither a success nor the server's fault."""


@dataclass(frozen=True)
class Figures:
    """Request outcomes and latency of one revision's pods (counters since each pod started)."""

    requests: int = 0
    errors: int = 0
    buckets: tuple[tuple[float, float], ...] = ()
    """Latency histogram: (upper bound in seconds, cumulative count), ascending, +Inf last."""

    def __add__(self, other: Figures) -> Figures:
        merged: dict[float, float] = {}
        for bound, count in (*self.buckets, *other.buckets):
            merged[bound] = merged.get(bound, 0.0) + count
        return Figures(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            buckets=tuple(sorted(merged.items())),
        )

    @property
    def error_rate_percent(self) -> float:
        """Errors per request, in percent (0 without requests)."""
        return 100.0 * self.errors / self.requests if self.requests else 0.0

    @property
    def p99_ms(self) -> float | None:
        """99th percentile latency in milliseconds; ``None`` without observations."""
        seconds = histogram_quantile(0.99, self.buckets)
        return None if seconds is None else seconds * 1000.0


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The ``q`` quantile of a cumulative histogram, interpolated linearly inside its bucket
    (as Prometheus' ``histogram_quantile`` does); the highest finite bound when it falls in
    the +Inf bucket."""
    ordered = sorted(buckets)
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound


@dataclass(frozen=True)
class Judgement:
    """The analysis of one step."""

    verdict: Literal["pass", "fail", "wait"]
    message: str
    figures: dict[str, Any] = field(default_factory=dict)
    """``status.rollout.analysis``."""


def judge(
    figures: Figures | None,
    analysis: Analysis,
    *,
    baseline_requests: int,
    elapsed_s: float,
    pause_s: float,
) -> Judgement:
    """Pass, fail or wait, for a step that has run ``elapsed_s`` of its ``pause_s``.

    Fails as soon as the revision has answered ``minRequests`` (at least one) and its error
    rate or p99 latency, over everything it answered so far, is above the threshold: a broken
    canary is stopped without waiting for the step's end. Passes at the end of the pause when
    the step saw ``minRequests`` and the thresholds hold.
    """
    if figures is None:
        return Judgement("wait", "no metrics read from the new revision's pods yet")
    step_requests = max(0, figures.requests - baseline_requests)
    if figures.requests < baseline_requests:  # a pod restarted: its counters started over
        step_requests = figures.requests
    p99 = figures.p99_ms
    report: dict[str, Any] = {
        "requests": figures.requests,
        "errors": figures.errors,
        "errorRatePercent": round(figures.error_rate_percent, 3),
        "stepRequests": step_requests,
    }
    if p99 is not None:
        report["p99LatencyMs"] = round(p99, 3)
    summary = (
        f"{figures.errors} of {figures.requests} requests failed "
        f"({figures.error_rate_percent:.2f}%, limit {analysis.max_error_rate_percent:g}%)"
    )
    if p99 is not None:
        limit = (
            f", limit {analysis.max_p99_latency_ms} ms"
            if analysis.max_p99_latency_ms is not None
            else ""
        )
        summary += f"; p99 latency {p99:.1f} ms{limit}"
    if figures.requests >= max(1, analysis.min_requests):
        if figures.error_rate_percent > analysis.max_error_rate_percent:
            return Judgement("fail", f"error rate too high: {summary}", report)
        if (
            analysis.max_p99_latency_ms is not None
            and p99 is not None
            and p99 > analysis.max_p99_latency_ms
        ):
            return Judgement("fail", f"p99 latency too high: {summary}", report)
    if elapsed_s < pause_s:
        return Judgement("wait", f"{summary}; {pause_s - elapsed_s:.0f}s of the step left", report)
    if step_requests < analysis.min_requests:
        return Judgement(
            "wait",
            f"waiting for requests: {step_requests} of {analysis.min_requests} in this step; "
            + summary,
            report,
        )
    return Judgement("pass", summary, report)


# --- model signatures ---------------------------------------------------------------------------

Tensor = tuple[str, str, tuple[int, ...]]


@dataclass(frozen=True)
class Signature:
    """A model's inputs and outputs: (name, datatype, shape) each, sorted by name."""

    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]

    @classmethod
    def from_metadata(cls, document: Mapping[str, Any]) -> Signature:
        """From an OIP v2 model metadata document (``GET /v2/models/{m}``)."""

        def tensors(key: str) -> tuple[Tensor, ...]:
            found = []
            for item in document.get(key) or ():
                if isinstance(item, Mapping):
                    shape = tuple(int(dim) for dim in item.get("shape") or ())
                    found.append((str(item.get("name")), str(item.get("datatype")), shape))
            return tuple(sorted(found))

        return cls(inputs=tensors("inputs"), outputs=tensors("outputs"))


def _describe(kind: str, old: tuple[Tensor, ...], new: tuple[Tensor, ...]) -> list[str]:
    before = {name: (dtype, shape) for name, dtype, shape in old}
    after = {name: (dtype, shape) for name, dtype, shape in new}
    changes = []
    for name in sorted(before.keys() | after.keys()):
        if name not in after:
            changes.append(f"{kind} {name} removed")
        elif name not in before:
            changes.append(f"{kind} {name} added")
        elif before[name] != after[name]:
            (old_type, old_shape), (new_type, new_shape) = before[name], after[name]
            changes.append(
                f"{kind} {name}: {old_type}{list(old_shape)} -> {new_type}{list(new_shape)}"
            )
    return changes


def signature_change(stable: Signature, candidate: Signature) -> str | None:
    """What differs between two signatures, or ``None`` when they are the same."""
    changes = _describe("input", stable.inputs, candidate.inputs)
    changes += _describe("output", stable.outputs, candidate.outputs)
    return "; ".join(changes) if changes else None

"""Triton-style inference statistics (``/v2/models/{m}/stats``, gRPC ``ModelStatistics``).

``perf_analyzer`` reads these to split server-side latency into queue and compute time. The
compute thread records batches, the event loop and the gRPC handler threads record requests:
every update and the snapshot take one uncontended lock.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(slots=True)
class Duration:
    """A count and the total nanoseconds spent."""

    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        """Account ``count`` events that took ``ns`` in total."""
        self.count += count
        self.ns += ns

    def as_dict(self) -> dict[str, int]:
        """The Triton JSON form."""
        return {"count": self.count, "ns": self.ns}


class StatsKeeper(Protocol):
    """Where the DataPlane records requests and batches and reads the statistics back."""

    def record_request(self, ok: bool, ns: int) -> None:
        """Account one finished request."""
        ...

    def record_batch(self, timing: BatchTiming, queue_ns: int) -> None:
        """Account one executed batch."""
        ...

    def as_dict(self, name: str, version: str) -> dict[str, Any]:
        """The Triton ``model_stats`` entry."""
        ...


@dataclass(frozen=True, slots=True)
class BatchTiming:
    """How one batch went, handed with each request's result."""

    batch_rows: int
    requests: int
    input_ns: int
    infer_ns: int
    output_ns: int


@dataclass(slots=True)
class _BatchStats:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


@dataclass(slots=True)
class InferenceStats:
    """Cumulative statistics of one model version."""

    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)
    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    batches: dict[int, _BatchStats] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record_batch(self, timing: BatchTiming, queue_ns: int) -> None:
        """Account one executed batch; ``queue_ns`` is the sum over its requests."""
        with self._lock:
            self._record_batch(timing, queue_ns)

    def _record_batch(self, timing: BatchTiming, queue_ns: int) -> None:
        requests = timing.requests
        self.execution_count += 1
        self.inference_count += timing.batch_rows
        self.queue.add(queue_ns, requests)
        self.compute_input.add(timing.input_ns * requests, requests)
        self.compute_infer.add(timing.infer_ns * requests, requests)
        self.compute_output.add(timing.output_ns * requests, requests)
        per_size = self.batches.get(timing.batch_rows)
        if per_size is None:
            per_size = self.batches[timing.batch_rows] = _BatchStats()
        per_size.compute_input.add(timing.input_ns)
        per_size.compute_infer.add(timing.infer_ns)
        per_size.compute_output.add(timing.output_ns)
        self.last_inference_ms = time.time_ns() // 1_000_000

    def record_request(self, ok: bool, ns: int) -> None:
        """Account one finished request (its whole time in the server)."""
        with self._lock:
            (self.success if ok else self.fail).add(ns)

    def as_dict(self, name: str, version: str) -> dict[str, Any]:
        """The Triton ``model_stats`` entry."""
        with self._lock:
            return self._as_dict(name, version)

    def _as_dict(self, name: str, version: str) -> dict[str, Any]:
        return {
            "name": name,
            "version": version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {
                "success": self.success.as_dict(),
                "fail": self.fail.as_dict(),
                "queue": self.queue.as_dict(),
                "compute_input": self.compute_input.as_dict(),
                "compute_infer": self.compute_infer.as_dict(),
                "compute_output": self.compute_output.as_dict(),
                "cache_hit": {"count": 0, "ns": 0},
                "cache_miss": {"count": 0, "ns": 0},
            },
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": stats.compute_input.as_dict(),
                    "compute_infer": stats.compute_infer.as_dict(),
                    "compute_output": stats.compute_output.as_dict(),
                }
                for size, stats in sorted(self.batches.items())
            ],
        }

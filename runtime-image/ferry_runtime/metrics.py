"""Prometheus metrics, on a per-server registry (so one process can hold several servers)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

_LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


def _batch_buckets(max_batch_size: int) -> tuple[float, ...]:
    buckets: list[float] = []
    size = 1
    while size < max_batch_size:
        buckets.append(size)
        size *= 2
    buckets.append(max_batch_size)
    return tuple(buckets)


class Metrics:
    """The runtime's metrics; names are prefixed ``ferry_``.

    - ``ferry_requests_total{protocol,outcome}``: finished inference requests.
    - ``ferry_request_duration_seconds{protocol}``: arrival to response, per request.
    - ``ferry_queue_duration_seconds``: time a request waited for its batch to start.
    - ``ferry_compute_duration_seconds``: one forward pass (merge, model, split).
    - ``ferry_batch_size``: rows per forward pass.
    - ``ferry_queue_depth``: requests waiting for a batch.
    - ``ferry_requests_in_flight``: requests accepted and not yet answered.
    - ``ferry_model_ready``: 1 once the model is loaded and warmed up.
    """

    def __init__(self, max_batch_size: int = 32) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        registry = self.registry
        self.requests = Counter(
            "ferry_requests",
            "Finished inference requests by protocol and outcome.",
            ["protocol", "outcome"],
            registry=registry,
        )
        self.request_duration = Histogram(
            "ferry_request_duration_seconds",
            "Time from a request's arrival to its response.",
            ["protocol"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.queue_duration = Histogram(
            "ferry_queue_duration_seconds",
            "Time a request waited in the batch queue.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.compute_duration = Histogram(
            "ferry_compute_duration_seconds",
            "Time of one batch: merge, forward pass and split.",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.batch_size = Histogram(
            "ferry_batch_size",
            "Rows per forward pass.",
            buckets=_batch_buckets(max_batch_size),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "ferry_queue_depth", "Requests waiting for a batch.", registry=registry
        )
        self.in_flight = Gauge(
            "ferry_requests_in_flight",
            "Inference requests accepted and not yet answered (queued or computing).",
            registry=registry,
        )
        self.model_ready = Gauge(
            "ferry_model_ready", "1 once the model is loaded and warmed up.", registry=registry
        )
        self._durations = {
            protocol: self.request_duration.labels(protocol) for protocol in ("rest", "grpc")
        }
        self._counts: dict[tuple[str, str], Counter] = {}

    def observe_request(self, protocol: str, outcome: str, seconds: float) -> None:
        """Account one finished inference request (label children cached: the hot path)."""
        count = self._counts.get((protocol, outcome))
        if count is None:
            count = self._counts[protocol, outcome] = self.requests.labels(protocol, outcome)
        count.inc()
        histogram = self._durations.get(protocol)
        if histogram is None:
            histogram = self._durations[protocol] = self.request_duration.labels(protocol)
        histogram.observe(seconds)

    def exposition(self) -> bytes:
        """This process's series in the text exposition format."""
        return generate_latest(self.registry)

    def render(self) -> tuple[bytes, str]:
        """What ``/metrics`` answers: the text exposition format and its content type."""
        return self.exposition(), CONTENT_TYPE_LATEST

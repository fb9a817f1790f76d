"""The operator's Prometheus metrics, served at ``/metrics`` (``FERRY_METRICS_PORT``).

Every series is prefixed ``ferry_operator_``:

* ``reconciles_total{outcome}``: one per reconcile pass; ``outcome`` is ``unchanged`` (nothing
  to write), ``changed`` (children applied or pruned, or status written), ``blocked`` (the spec
  or the API server refused something that only a change can fix; reported in status) or
  ``retry`` (an API error: retried with backoff);
* ``reconcile_duration_seconds``: histogram of one pass, API requests included;
* ``queue_depth``: keys waiting (ready or backing off); ``reconciles_active``: being processed;
  ``failing_objects``: ModelDeployments whose last pass failed;
* ``api_requests_total{verb,code}``: every request to the API server, Kopf's included; ``verb``
  is the Kubernetes verb (get, list, watch, create, patch, delete; ``discovery`` for
  ``/api``/``/apis``), ``code`` the HTTP status, or ``error`` when no answer came.

The registry is the operator's own (no process-global state, so tests can run several
operators); the HTTP server runs in a thread, so a busy event loop never delays a scrape.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

NAMESPACE = "ferry_operator"
RECONCILE_OUTCOMES = ("unchanged", "changed", "blocked", "retry")
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class OperatorMetrics:
    """The operator's metrics, in their own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.reconciles = Counter(
            "reconciles",
            "Reconcile passes by outcome (unchanged, changed, blocked, retry).",
            ["outcome"],
            namespace=NAMESPACE,
            registry=self.registry,
        )
        for outcome in RECONCILE_OUTCOMES:  # every outcome exists from the start (rate() needs it)
            self.reconciles.labels(outcome=outcome)
        self.reconcile_duration = Histogram(
            "reconcile_duration_seconds",
            "Duration of one reconcile pass, its API requests included.",
            namespace=NAMESPACE,
            buckets=DURATION_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "queue_depth",
            "ModelDeployments waiting to be reconciled (ready or backing off).",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.active = Gauge(
            "reconciles_active",
            "ModelDeployments being reconciled now.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.failing = Gauge(
            "failing_objects",
            "ModelDeployments whose last reconcile failed and is being retried.",
            namespace=NAMESPACE,
            registry=self.registry,
        )
        self.api_requests = Counter(
            "api_requests",
            "Requests to the Kubernetes API server by verb and HTTP status code.",
            ["verb", "code"],
            namespace=NAMESPACE,
            registry=self.registry,
        )

    def watch_queue(
        self, depth: Callable[[], int], active: Callable[[], int], failing: Callable[[], int]
    ) -> None:
        """Read the queue's gauges at scrape time."""
        self.queue_depth.set_function(depth)
        self.active.set_function(active)
        self.failing.set_function(failing)

    def reconciled(self, outcome: str, seconds: float) -> None:
        """Record one reconcile pass."""
        self.reconciles.labels(outcome=outcome).inc()
        self.reconcile_duration.observe(seconds)

    def api_request(self, verb: str, code: int | None) -> None:
        """Record one API request (``code`` ``None``: no answer)."""
        self.api_requests.labels(verb=verb, code=str(code) if code is not None else "error").inc()

    def serve(self, port: int, address: str = "0.0.0.0") -> Callable[[], None]:
        """Serve ``/metrics`` on ``address:port`` in a thread; returns a function stopping it."""
        server, thread = start_http_server(port, addr=address, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop

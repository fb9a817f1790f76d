"""The operator's /metrics: reconciles by outcome, their duration, queue gauges and API requests
by verb and code, scraped over HTTP from an operator running against the fake API server."""

from __future__ import annotations

import asyncio
import socket
import urllib.request
from typing import Any

from ferry_operator import constants
from ferry_operator.metrics import OperatorMetrics
from prometheus_client.parser import text_string_to_metric_families

MD = f"{constants.GROUP}/{constants.VERSION}/{constants.PLURAL}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_every_outcome_is_exported_from_the_start() -> None:
    metrics = OperatorMetrics()
    metrics.watch_queue(lambda: 3, lambda: 1, lambda: 0)
    metrics.reconciled("changed", 0.02)
    metrics.api_request("patch", 429)
    metrics.api_request("watch", None)
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in metrics.registry.collect()
        for s in family.samples
    }
    for outcome in ("unchanged", "changed", "blocked", "retry"):
        assert ("ferry_operator_reconciles_total", (("outcome", outcome),)) in samples
    assert samples["ferry_operator_reconciles_total", (("outcome", "changed"),)] == 1
    assert samples["ferry_operator_queue_depth", ()] == 3
    assert samples["ferry_operator_reconciles_active", ()] == 1
    assert samples["ferry_operator_api_requests_total", (("code", "429"), ("verb", "patch"))] == 1
    assert samples["ferry_operator_api_requests_total", (("code", "error"), ("verb", "watch"))] == 1
    assert samples["ferry_operator_reconcile_duration_seconds_count", ()] == 1


async def test_a_running_operator_serves_its_metrics(kube: Any) -> None:
    port = _free_port()
    kube.server.fail("PATCH", "/deployments/", 429, headers={"Retry-After": "0"})
    async with kube.operator(kube.settings(metrics_port=port, metrics_address="127.0.0.1")):
        await kube.create_md(kube.example())
        name = kube.example()["metadata"]["name"]

        def observed() -> bool:
            status = (kube.object(MD, "default", name) or {}).get("status") or {}
            return bool(status.get("observedGeneration") == 1)

        await kube.wait_for(observed)
        samples = await asyncio.to_thread(_scrape, port)
    changed = samples["ferry_operator_reconciles_total", (("outcome", "changed"),)]
    retried = samples["ferry_operator_reconciles_total", (("outcome", "retry"),)]
    assert changed >= 1
    assert retried >= 1  # the injected 429 failed one pass, which was retried
    assert samples["ferry_operator_reconcile_duration_seconds_count", ()] >= changed + retried
    assert samples["ferry_operator_api_requests_total", (("code", "429"), ("verb", "patch"))] == 1
    assert samples["ferry_operator_api_requests_total", (("code", "200"), ("verb", "patch"))] >= 2
    assert samples["ferry_operator_api_requests_total", (("code", "200"), ("verb", "list"))] >= 1
    assert ("ferry_operator_queue_depth", ()) in samples
    # the endpoint is gone with the operator
    try:
        await asyncio.to_thread(_scrape, port)
    except OSError:
        pass
    else:
        raise AssertionError("/metrics still answers after the operator stopped")

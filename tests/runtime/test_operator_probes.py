"""The operator's probes against a real runtime server: the metric names and the metadata
document the canary analysis reads are the ones ferry_runtime serves (a contract test: the two
wings never import each other, this test imports both)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from ferry_operator import constants
from ferry_operator.analysis import Signature, signature_change
from ferry_operator.probes import HttpProber, parse_figures
from ferry_operator.rollout_observed import ProbeRequest
from ferry_runtime.metrics import Metrics
from runtime_helpers import RunningServer


def pod(ip: str, revision: str, *, ready: bool = True) -> dict[str, Any]:
    return {
        "metadata": {"name": f"p-{ip}", "labels": {constants.LABEL_REVISION: revision}},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_parse_figures_reads_the_runtime_exposition() -> None:
    metrics = Metrics()
    for outcome, count in (("success", 7), ("failed", 2), ("invalid", 1), ("disconnected", 4)):
        for _ in range(count):
            metrics.observe_request("rest", outcome, 0.004)
    metrics.observe_request("grpc", "unavailable", 0.3)
    metrics.observe_request("grpc", "success", 0.02)
    body, _ = metrics.render()
    figures = parse_figures(body.decode())
    # Disconnected requests are neither; client errors count as requests only.
    assert figures.requests == 7 + 2 + 1 + 1 + 1
    assert figures.errors == 2 + 1
    # Both protocols' histograms added up (disconnected requests were timed too).
    assert dict(figures.buckets)[0.005] == 14
    assert figures.buckets[-1] == (float("inf"), 16)


def test_http_prober_reads_a_real_runtime(
    start_server: Callable[..., RunningServer], model_dir_factory: Callable[..., Path]
) -> None:
    server = start_server(model_dir_factory(), model_name="affine", model_version="1")
    host, port = server.http_url.split(":")
    body = {
        "inputs": [
            {
                "name": "INPUT__0",
                "datatype": "FP32",
                "shape": [1, 4],
                "data": np.arange(4).tolist(),
            }
        ]
    }
    with httpx.Client(base_url=server.http_base) as client:
        for _ in range(5):
            assert client.post("/v2/models/affine/infer", json=body).status_code == 200
        bad = {"inputs": [{**body["inputs"][0], "shape": [1, 5]}]}
        assert client.post("/v2/models/affine/infer", json=bad).status_code == 400

    async def read() -> Any:
        prober = HttpProber(timeout_s=5)
        try:
            target = ("affine", int(port))
            request = ProbeRequest(
                figures_of="r2", signatures_of=("r1", "r2"), targets={"r1": target, "r2": target}
            )
            pods = [pod(host, "r2"), pod(host, "r1"), pod("10.244.0.99", "r1", ready=False)]
            first = await prober.probe(("ns", "m"), request, pods)
            # Signatures are remembered per revision: the second read needs no pod.
            second = await prober.probe(("ns", "m"), request, [])
            return first, second
        finally:
            await prober.close()

    first, second = asyncio.run(read())
    assert first.figures is not None
    assert first.figures.requests == 6
    assert first.figures.errors == 0
    assert first.figures.p99_ms is not None
    expected = Signature(
        inputs=(("INPUT__0", "FP32", (-1, 4)),), outputs=(("OUTPUT__0", "FP32", (-1, 4)),)
    )
    assert first.signatures == {"r1": expected, "r2": expected}
    assert second.signatures == first.signatures
    assert second.figures is None  # no ready pod: unknown, never zero


def test_http_prober_leaves_out_what_does_not_answer() -> None:
    async def read() -> Any:
        prober = HttpProber(timeout_s=0.5)
        try:
            # Nothing listens on this loopback port.
            request = ProbeRequest(figures_of="r", signatures_of=("r",), targets={"r": ("m", 9)})
            return await prober.probe(("ns", "m"), request, [pod("127.0.0.1", "r")])
        finally:
            await prober.close()

    probes = asyncio.run(read())
    assert probes.figures is None
    assert probes.signatures == {}


def test_a_changed_model_json_is_a_changed_signature(
    start_server: Callable[..., RunningServer], model_dir_factory: Callable[..., Path]
) -> None:
    wider = {
        "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [5]}],
        "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [5]}],
    }
    servers = {
        "r1": start_server(model_dir_factory(), model_name="m"),
        "r2": start_server(model_dir_factory(**wider), model_name="m"),
    }

    async def read(revision: str) -> Signature | None:
        prober = HttpProber(timeout_s=5)
        host, port = servers[revision].http_url.split(":")
        try:
            request = ProbeRequest(signatures_of=(revision,), targets={revision: ("m", int(port))})
            probes = await prober.probe(("ns", "m"), request, [pod(host, revision)])
            return probes.signatures.get(revision)
        finally:
            await prober.close()

    old, new = asyncio.run(read("r1")), asyncio.run(read("r2"))
    assert old is not None
    assert new is not None
    assert signature_change(old, new) == (
        "input INPUT__0: FP32[-1, 4] -> FP32[-1, 5]; output OUTPUT__0: FP32[-1, 4] -> FP32[-1, 5]"
    )

"""A real server under concurrent load: own rows back, error fan-out, queue full."""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from runtime_helpers import GatedModel, RunningServer, load_torchscript
from torch import nn
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException


class FailsOnNegative(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x < 0).any()):
            raise RuntimeError("negative input")
        return x * 2.0 + 1.0


def rows(count: int, start: float) -> np.ndarray:
    return (np.arange(count * 4, dtype=np.float32) + start).reshape(count, 4)


def grpc_request(data: np.ndarray) -> Any:
    request = service_pb2.ModelInferRequest(model_name="model")
    request.inputs.add(name="INPUT__0", datatype="FP32", shape=list(data.shape))
    request.raw_input_contents.append(data.tobytes())
    return request


def http_body(data: np.ndarray) -> bytes:
    tensor = {"name": "INPUT__0", "datatype": "FP32", "shape": list(data.shape)}
    return orjson.dumps({"inputs": [{**tensor, "data": data.ravel().tolist()}]})


async def test_many_concurrent_requests_each_get_exactly_their_own_rows(
    start_server: Callable[..., RunningServer], model_dir_factory: Callable[..., Path]
) -> None:
    server = start_server(model_dir_factory(), max_batch_size=8, max_queue_delay_ms=2)
    generator = random.Random(11)
    checked = 0

    async def grpc_client(stub: Any, index: int) -> None:
        nonlocal checked
        for step in range(8):
            data = rows(generator.randint(1, 3), start=100_000 * index + 1000 * step)
            reply = await stub.ModelInfer(grpc_request(data))
            out = np.frombuffer(reply.raw_output_contents[0], dtype=np.float32)
            np.testing.assert_array_equal(out.reshape(data.shape), data * 2 + 1)
            checked += 1

    async def http_client(client: httpx.AsyncClient, index: int) -> None:
        nonlocal checked
        for step in range(8):
            data = rows(generator.randint(1, 3), start=-100_000 * index - 1000 * step - 1)
            reply = await client.post("/v2/models/model/infer", content=http_body(data))
            assert reply.status_code == 200, reply.text
            output = reply.json()["outputs"][0]
            assert output["shape"] == list(data.shape)
            assert output["data"] == (data * 2 + 1).ravel().tolist()
            checked += 1

    async with grpc.aio.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(base_url=server.http_base, limits=limits) as client:
            await asyncio.gather(
                *(grpc_client(stub, index) for index in range(24)),
                *(http_client(client, index) for index in range(24)),
            )
    assert checked == 48 * 8
    stats = httpclient.InferenceServerClient(server.http_url).get_inference_statistics("model")
    model_stats = stats["model_stats"][0]
    assert model_stats["inference_stats"]["success"]["count"] == 48 * 8
    assert model_stats["execution_count"] < 48 * 8, "requests were never batched together"


def gated_server(
    start_server: Callable[..., RunningServer],
    model_dir_factory: Callable[..., Path],
    module: nn.Module | None = None,
    **settings: Any,
) -> tuple[RunningServer, GatedModel]:
    gate = GatedModel(load_torchscript(model_dir_factory(module)))
    return start_server(model=gate, **settings), gate


def in_background(function: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(function())
        except Exception as error:
            box.append(error)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, box


def wait_for(condition: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def test_queue_full_answers_503_and_unavailable_at_once(
    start_server: Callable[..., RunningServer], model_dir_factory: Callable[..., Path]
) -> None:
    server, gate = gated_server(start_server, model_dir_factory, max_queue_size=2)
    url = f"{server.http_base}/v2/models/model/infer"
    first = in_background(lambda: httpx.post(url, content=http_body(rows(1, 0)), timeout=30))
    assert gate.entered.wait(10)
    queued = [
        in_background(lambda: httpx.post(url, content=http_body(rows(1, 1)), timeout=30)),
        in_background(lambda: httpx.post(url, content=http_body(rows(1, 2)), timeout=30)),
    ]
    wait_for(lambda: server.call(lambda: server.server.batcher.queue_depth) == 2)

    begun = time.perf_counter()
    refused = httpx.post(url, content=http_body(rows(1, 3)))
    assert refused.status_code == 503
    assert "queue is full" in refused.json()["error"]
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(grpc_request(rows(1, 4)))
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "queue is full" in raised.value.details()
    assert time.perf_counter() - begun < 5, "overload must be refused at once, not queued"

    gate.release.set()
    for thread, box in (first, *queued):
        thread.join(10)
        assert box[0].status_code == 200
    metrics = httpx.get(f"{server.http_base}/metrics").text
    assert 'ferry_requests_total{outcome="queue_full",protocol="rest"} 1.0' in metrics
    assert 'ferry_requests_total{outcome="queue_full",protocol="grpc"} 1.0' in metrics


def test_a_failing_batch_fails_each_request_with_the_cause(
    start_server: Callable[..., RunningServer], model_dir_factory: Callable[..., Path]
) -> None:
    server, gate = gated_server(start_server, model_dir_factory, FailsOnNegative())
    url = f"{server.http_base}/v2/models/model/infer"
    first = in_background(lambda: httpx.post(url, content=http_body(rows(1, 0)), timeout=30))
    assert gate.entered.wait(10)
    poisoned = in_background(lambda: httpx.post(url, content=http_body(rows(1, -10)), timeout=30))

    def grpc_infer() -> Any:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        tensor = grpcclient.InferInput("INPUT__0", [2, 4], "FP32")
        tensor.set_data_from_numpy(rows(2, 5))
        return client.infer("model", [tensor])

    bystander = in_background(grpc_infer)
    wait_for(lambda: server.call(lambda: server.server.batcher.queue_depth) == 2)
    gate.release.set()
    for thread, _ in (first, poisoned, bystander):
        thread.join(10)
    assert first[1][0].status_code == 200
    failed = poisoned[1][0]
    assert failed.status_code == 500
    assert "batch of 2 request(s), 3 row(s)" in failed.json()["error"]
    assert "negative input" in failed.json()["error"]
    grpc_error = bystander[1][0]
    assert isinstance(grpc_error, InferenceServerException)
    assert "INTERNAL" in str(grpc_error.status())
    assert "negative input" in grpc_error.message()
    # the server keeps serving
    ok = httpx.post(url, content=http_body(rows(1, 1)))
    assert ok.status_code == 200
    assert httpx.get(f"{server.http_base}/v2/health/live").status_code == 200

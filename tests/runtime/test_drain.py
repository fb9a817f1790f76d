"""SIGTERM under load: intake stops, accepted requests all finish, the process exits 0."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
import torch
from runtime_helpers import (
    FRONT_END_MODES,
    free_port,
    launch_server,
    serve_process,
    write_model_dir,
)
from torch import nn
from tritonclient.grpc import service_pb2, service_pb2_grpc


class Slow(nn.Module):
    """``2x + 1`` after ~0.4 s of matrix work, so requests pile up behind each batch (even
    when a loaded machine is slow to send them all)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w = nn.Parameter(torch.rand(384, 384) / 384, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.w
        for _ in range(160):
            h = torch.tanh(h @ self.w)
        return x * 2.0 + 1.0 + h.sum() * 0.0


def metric(base: str, name: str) -> float:
    for line in httpx.get(f"{base}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not exported")


def http_infer(base: str, start: float) -> np.ndarray:
    data = np.arange(4, dtype=np.float32) + start
    body = {"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 4], "data": data}]}
    reply = httpx.post(
        f"{base}/v2/models/model/infer",
        content=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        timeout=60,
    )
    assert reply.status_code == 200, reply.text
    return np.array(reply.json()["outputs"][0]["data"], dtype=np.float32) - (data * 2 + 1)


def grpc_infer(address: str, start: float) -> np.ndarray:
    data = np.arange(4, dtype=np.float32) + start
    request = service_pb2.ModelInferRequest(model_name="model")
    request.inputs.add(name="INPUT__0", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(data.tobytes())
    with grpc.insecure_channel(address) as channel:
        reply = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=60)
    return np.frombuffer(reply.raw_output_contents[0], dtype=np.float32) - (data * 2 + 1)


@pytest.mark.parametrize("front_ends", FRONT_END_MODES)
def test_sigterm_drains_queued_and_in_flight_requests(tmp_path: Path, front_ends: int) -> None:
    model_dir = write_model_dir(tmp_path / "slow", Slow())
    http_port, grpc_port = free_port(), free_port()
    process = serve_process(
        model_dir,
        http_port=http_port,
        grpc_port=grpc_port,
        max_batch_size=2,
        drain_timeout_s=60,
        frontend_processes=front_ends,
    )
    base = f"http://127.0.0.1:{http_port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "server never became ready"
            try:
                if httpx.get(f"{base}/v2/health/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)

        with ThreadPoolExecutor(10) as pool:
            futures = [pool.submit(http_infer, base, 10.0 * i) for i in range(5)]
            futures += [
                pool.submit(grpc_infer, f"127.0.0.1:{grpc_port}", -10.0 * i) for i in range(5)
            ]
            deadline = time.monotonic() + 30
            while metric(base, "ferry_requests_in_flight") < 10:  # all accepted
                assert time.monotonic() < deadline, "requests never reached the server"
                time.sleep(0.01)
            assert metric(base, "ferry_queue_depth") >= 5, "expected a queue behind the model"
            process.send_signal(signal.SIGTERM)
            errors = [future.result(timeout=90) for future in futures]
        for error in errors:
            np.testing.assert_array_equal(error, np.zeros(4, dtype=np.float32))
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
        assert "draining" in output
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{base}/v2/health/live")
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_signals_stop_the_server_and_previous_handlers_come_back(
    model_dir_factory: Any,
) -> None:
    """In the main thread: SIGTERM drains and returns 0, SIGINT's old handler is restored."""
    from ferry_runtime.server import RuntimeServer
    from ferry_runtime.settings import RuntimeSettings

    def previous_handler(signum: int, frame: object) -> None:  # pragma: no cover
        raise AssertionError("not to be called")

    old_term = signal.signal(signal.SIGTERM, previous_handler)
    old_int = signal.getsignal(signal.SIGINT)
    try:
        settings = RuntimeSettings(
            model_dir=model_dir_factory(), host="127.0.0.1", http_port=0, grpc_port=0
        )
        server = RuntimeServer(settings)

        async def main() -> int:
            async def kill_when_ready() -> None:
                while not server.dataplane.ready():  # noqa: ASYNC110 - readiness has no event
                    await asyncio.sleep(0.01)
                os.kill(os.getpid(), signal.SIGTERM)

            killer = asyncio.ensure_future(kill_when_ready())
            status = await server.run()
            await killer
            return status

        assert asyncio.run(main()) == 0
        assert signal.getsignal(signal.SIGTERM) is previous_handler
        assert signal.getsignal(signal.SIGINT) is old_int
    finally:
        signal.signal(signal.SIGTERM, old_term)


@pytest.mark.parametrize("front_ends", FRONT_END_MODES)
def test_a_model_that_cannot_load_ends_the_server_with_status_3(
    tmp_path: Path, front_ends: int
) -> None:
    model_dir = write_model_dir(tmp_path / "m")
    (model_dir / "model.pt").write_bytes(b"not a model")
    running = launch_server(model_dir, wait_ready=False, frontend_processes=front_ends)
    running.thread.join(30)
    assert running.exit_codes == [3]  # EXIT_MODEL_LOAD_FAILED
    if front_ends:  # stopped with it, not orphaned
        assert [p.poll() for p in running.server._front_ends.processes] == [0] * front_ends


def test_requests_during_loading_get_503_and_liveness_stays_up(tmp_path: Path) -> None:
    from ferry_runtime.server import default_model_loader

    loading = threading.Event()
    release = threading.Event()

    def slow_loader(settings: Any) -> Any:
        loading.set()
        assert release.wait(30)
        return default_model_loader(settings)

    running = launch_server(
        write_model_dir(tmp_path / "m"), model_loader=slow_loader, wait_ready=False
    )
    try:
        assert loading.wait(30)
        base = running.http_base
        assert httpx.get(f"{base}/v2/health/live").status_code == 200
        assert httpx.get(f"{base}/v2/health/ready").status_code == 503
        assert httpx.get(f"{base}/v2/models/model/ready").status_code == 503
        body = {"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 4]}]}
        body["inputs"][0]["data"] = [1, 2, 3, 4]
        reply = httpx.post(f"{base}/v2/models/model/infer", json=body)
        assert reply.status_code == 503
        assert "loading" in reply.json()["error"]
        release.set()
        deadline = time.monotonic() + 30
        while httpx.get(f"{base}/v2/health/ready").status_code != 200:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert httpx.post(f"{base}/v2/models/model/infer", json=body).status_code == 200
    finally:
        release.set()
        assert running.stop() == 0


def test_not_ready_while_draining_but_requests_that_arrive_are_served(
    start_server: Any, model_dir_factory: Any
) -> None:
    running = start_server(model_dir_factory())
    running.call(lambda: running.server.dataplane.set_ready(False))
    base = running.http_base
    assert httpx.get(f"{base}/v2/health/ready").status_code == 503
    assert httpx.get(f"{base}/v2/health/live").status_code == 200
    body = {"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 4]}]}
    body["inputs"][0]["data"] = [1, 2, 3, 4]
    reply = httpx.post(f"{base}/v2/models/model/infer", json=body)
    assert reply.status_code == 200
    assert reply.json()["outputs"][0]["data"] == [3, 5, 7, 9]

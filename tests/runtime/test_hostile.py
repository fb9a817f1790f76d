"""Hostile input and overload (issue 10): one regression test per class the review found.

1. shapes numpy cannot allocate → 400 / INVALID_ARGUMENT, never 500 / INTERNAL;
2. bodies larger than the model can use are refused before they are read;
3. request heads are bounded (431), slow clients time out (408), drain closes stalled uploads;
4. undecodable gRPC messages → INVALID_ARGUMENT; error messages are bounded; overload →
   UNAVAILABLE, never RESOURCE_EXHAUSTED;
5. overload is shed before the body is read.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
from runtime_helpers import (
    FRONT_END_MODES,
    GatedModel,
    RunningServer,
    launch_server,
    load_torchscript,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc

MAX_BATCH = 4
"""The default model (``INPUT__0`` FP32 [4]) with 4 rows: its largest body is small."""


@pytest.fixture(scope="module", params=FRONT_END_MODES)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningServer]:
    from runtime_helpers import write_model_dir

    running = launch_server(
        write_model_dir(tmp_path_factory.mktemp("m")),
        max_batch_size=MAX_BATCH,
        header_timeout_s=0.5,
        body_timeout_s=0.5,
        max_header_bytes=8 * 1024,
        max_header_count=32,
        frontend_processes=request.param,
    )
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[Any]:
    channel = grpc.insecure_channel(server.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


def infer_url(server: RunningServer) -> str:
    return f"{server.http_base}/v2/models/model/infer"


def raw_exchange(server: RunningServer, data: bytes, wait: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; return what the server sends until it closes."""
    host, port = server.http_url.split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                return received
            if not chunk:
                return received
            received += chunk


# ---- 1. shapes numpy cannot allocate ---------------------------------------------------------


@pytest.mark.parametrize("shape", [[2**62, 0], [0, 2**62], [2**40, 2**40, 0], [2**31 + 1, 0]])
def test_empty_tensors_with_huge_dimensions_are_400_over_json(
    server: RunningServer, shape: list[int]
) -> None:
    body = {"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": shape, "data": []}]}
    reply = httpx.post(infer_url(server), content=orjson.dumps(body))
    assert reply.status_code == 400, reply.text
    assert "elements" in reply.json()["error"]


def test_empty_tensors_with_huge_dimensions_are_400_over_binary(server: RunningServer) -> None:
    head = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "INPUT__0",
                    "datatype": "FP32",
                    "shape": [2**62, 0],
                    "parameters": {"binary_data_size": 0},
                }
            ]
        }
    )
    reply = httpx.post(
        infer_url(server),
        content=head,
        headers={"Inference-Header-Content-Length": str(len(head))},
    )
    assert reply.status_code == 400, reply.text


def test_empty_tensors_with_huge_dimensions_are_invalid_argument_over_grpc(stub: Any) -> None:
    for contents in ("raw", "typed"):
        request = service_pb2.ModelInferRequest(model_name="model")
        request.inputs.add(name="INPUT__0", datatype="FP32", shape=[2**62, 0])
        if contents == "raw":
            request.raw_input_contents.append(b"")
        with pytest.raises(grpc.RpcError) as raised:
            stub.ModelInfer(request)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, contents


# ---- 2. bodies larger than the model can use -------------------------------------------------


def test_a_body_larger_than_the_model_accepts_is_refused_before_it_is_read(
    server: RunningServer,
) -> None:
    # 4 rows of 4 FP32 numbers: no valid body comes near 50 MB; the server answers at once,
    # without waiting for (or reading) a single byte of it
    head = (
        b"POST /v2/models/model/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n"
    )
    reply = raw_exchange(server, head, wait=2.0)
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"exceeds the limit" in reply


def test_an_oversized_chunked_body_is_refused_while_it_is_read(server: RunningServer) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 4], "data": ['
        for _ in range(2000):
            yield b"1.0, " * 200

    reply = httpx.post(infer_url(server), content=chunks())
    assert reply.status_code == 413


def test_predict_is_bounded_like_infer(server: RunningServer) -> None:
    head = b"POST /v1/models/model:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 50000000\r\n\r\n"
    assert raw_exchange(server, head, wait=2.0).startswith(b"HTTP/1.1 413")


# ---- 3. request heads and slow clients -------------------------------------------------------


def test_a_huge_header_is_431(server: RunningServer) -> None:
    reply = raw_exchange(
        server, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n"
    )
    assert reply.startswith(b"HTTP/1.1 431"), reply[:100]


def test_too_many_headers_are_431(server: RunningServer) -> None:
    headers = b"".join(b"X-H%d: v\r\n" % index for index in range(100))
    reply = raw_exchange(server, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert reply.startswith(b"HTTP/1.1 431"), reply[:100]


def test_headers_just_under_the_limits_are_served(server: RunningServer) -> None:
    headers = {f"x-h{index}": "v" * 100 for index in range(20)}
    assert httpx.get(f"{server.http_base}/v2/health/live", headers=headers).status_code == 200


def test_a_half_sent_head_times_out_with_408(server: RunningServer) -> None:
    begun = time.monotonic()
    reply = raw_exchange(server, b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n")
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert time.monotonic() - begun < 4


def test_an_idle_connection_is_closed(server: RunningServer) -> None:
    begun = time.monotonic()
    assert raw_exchange(server, b"") == b""
    assert time.monotonic() - begun < 4


def test_a_half_sent_body_times_out_with_408(server: RunningServer) -> None:
    head = (
        b"POST /v2/models/model/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n"
        b'{"inputs": ['
    )
    reply = raw_exchange(server, head)
    assert reply.startswith(b"HTTP/1.1 408"), reply[:100]
    assert httpx.get(f"{server.http_base}/v2/health/live").status_code == 200


def test_drain_closes_a_stalled_upload_at_once(model_dir: Path) -> None:
    running = launch_server(model_dir, drain_timeout_s=20, body_timeout_s=60)
    host, port = running.http_url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/model/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 500\r\n\r\n{"
        )
        time.sleep(0.3)  # the request's head is in; its body never completes
        begun = time.monotonic()
        assert running.stop() == 0
        assert time.monotonic() - begun < 5, "drain waited for an upload that never completes"
        assert sock.recv(100) == b""


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    from runtime_helpers import write_model_dir

    return write_model_dir(tmp_path / "m")


# ---- 4. gRPC: undecodable messages, bounded errors, overload code -----------------------------


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xff\xff\xff",  # garbage
        service_pb2.ModelInferRequest(model_name="model").SerializeToString()[:-2] + b"\x12",
        b"\x0a\xff\xff\xff\xff\x0f",  # a field claiming a 4 GiB length
    ],
    ids=["garbage", "truncated", "huge length prefix"],
)
def test_undecodable_grpc_messages_are_invalid_argument(
    server: RunningServer, payload: bytes
) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
        with pytest.raises(grpc.RpcError) as raised:
            call(payload)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid ModelInferRequest" in raised.value.details()


def test_grpc_errors_quoting_huge_input_stay_bounded(stub: Any) -> None:
    # both just fit the model's message limit (64 KiB + 4 rows): larger ones are refused unread
    named = service_pb2.ModelInferRequest(model_name="m" * 60_000)
    named.inputs.add(name="INPUT__0", datatype="FP32", shape=[1, 4])
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(named)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    assert len(raised.value.details()) <= 1024

    crowded = service_pb2.ModelInferRequest(model_name="model")
    for index in range(1_000):
        crowded.inputs.add(name=f"I{index}", datatype="FP32", shape=[1, 4])
        crowded.raw_input_contents.append(bytes(16))
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(crowded)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "more" in raised.value.details()
    assert len(raised.value.details()) <= 1024


def test_rest_errors_quoting_huge_input_stay_bounded(server: RunningServer) -> None:
    inputs = [
        {"name": f"INPUT_{index}" * 50, "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
        for index in range(300)
    ]
    reply = httpx.post(infer_url(server), content=orjson.dumps({"inputs": inputs}))
    assert reply.status_code in (400, 413)
    assert len(reply.json()["error"]) <= 1024


def _gated(tmp_path: Path, **settings: Any) -> tuple[RunningServer, GatedModel]:
    from runtime_helpers import write_model_dir

    gate = GatedModel(load_torchscript(write_model_dir(tmp_path / "gated")))
    return launch_server(model=gate, **settings), gate


def test_grpc_overload_answers_unavailable_never_resource_exhausted(tmp_path: Path) -> None:
    running, gate = _gated(tmp_path, max_queue_size=2, max_batch_size=1)
    try:
        request = service_pb2.ModelInferRequest(model_name="model")
        request.inputs.add(name="INPUT__0", datatype="FP32", shape=[1, 4])
        request.raw_input_contents.append(np.ones(4, np.float32).tobytes())
        channel = grpc.insecure_channel(running.grpc_url)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)

        def call() -> grpc.StatusCode:
            try:
                stub.ModelInfer(request, timeout=30)
            except grpc.RpcError as error:
                # grpc's RpcError carries no annotations; the raised call error is a Call too
                return error.code()  # type: ignore[no-any-return]
            return grpc.StatusCode.OK

        with ThreadPoolExecutor(64) as pool:
            first = pool.submit(call)
            assert gate.entered.wait(10)
            futures = [pool.submit(call) for _ in range(60)]
            deadline = time.monotonic() + 20  # all but the queued few are refused at once
            while sum(future.done() for future in futures) < 55:
                assert time.monotonic() < deadline, "overload was not refused at once"
                time.sleep(0.02)
            gate.release.set()
            codes = [future.result() for future in (first, *futures)]
        channel.close()
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, codes
        assert codes.count(grpc.StatusCode.UNAVAILABLE) >= 50
    finally:
        gate.release.set()
        running.stop()


# ---- 5. shedding before the body -------------------------------------------------------------


@pytest.mark.parametrize("front_ends", [0, 1], ids=["one-process", "one-front-end"])
def test_a_full_queue_is_shed_before_the_body_is_read(tmp_path: Path, front_ends: int) -> None:
    running, gate = _gated(
        tmp_path, max_queue_size=1, max_batch_size=1, frontend_processes=front_ends
    )
    url = infer_url(running)
    body = orjson.dumps(
        {"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
    )
    results: list[int] = []

    def post() -> None:
        results.append(httpx.post(url, content=body, timeout=30).status_code)

    threads = [threading.Thread(target=post) for _ in range(2)]
    try:
        threads[0].start()
        assert gate.entered.wait(10)
        threads[1].start()
        deadline = time.monotonic() + 10
        while running.call(lambda: running.server.batcher.queue_depth) < 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        # the head alone is enough to be refused: the body is never sent
        head = (
            b"POST /v2/models/model/infer HTTP/1.1\r\nHost: x\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body)
        )
        reply = raw_exchange(running, head, wait=2.0)
        assert reply.startswith(b"HTTP/1.1 503"), reply[:100]
        assert b"queue is full" in reply
    finally:
        gate.release.set()
        for thread in threads:
            thread.join(30)
        running.stop()
    assert results == [200, 200]


def test_a_refused_request_leaves_the_connection_usable(server: RunningServer) -> None:
    with httpx.Client(base_url=server.http_base) as client:
        big = client.post(
            "/v2/models/model/infer",
            content=b"x" * 300_000,
            headers={"Content-Type": "application/json"},
        )
        assert big.status_code == 413
        body = {
            "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]
        }
        assert client.post("/v2/models/model/infer", content=orjson.dumps(body)).status_code == 200

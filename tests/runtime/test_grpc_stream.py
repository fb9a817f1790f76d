"""``ModelStreamInfer`` against a real server: tritonclient's stream API and hand-built messages."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from runtime_helpers import FRONT_END_MODES, RunningServer, launch_server, write_model_dir
from tritonclient.grpc import service_pb2, service_pb2_grpc


@pytest.fixture(scope="module", params=FRONT_END_MODES)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningServer]:
    running = launch_server(
        write_model_dir(tmp_path_factory.mktemp("affine")),
        model_name="affine",
        max_batch_size=8,
        frontend_processes=request.param,
    )
    yield running
    assert running.stop() == 0


def rows(count: int, start: float = 0.0) -> np.ndarray:
    return (np.arange(count * 4, dtype=np.float32).reshape(count, 4) + start) / 10


def test_tritonclient_stream_answers_every_request_in_order(server: RunningServer) -> None:
    answers: queue.Queue[tuple[Any, Any]] = queue.Queue()
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for index in range(40):
            tensor = grpcclient.InferInput("INPUT__0", [1 + index % 3, 4], "FP32")
            tensor.set_data_from_numpy(rows(1 + index % 3, start=index))
            client.async_stream_infer("affine", [tensor], request_id=f"s-{index}")
        got = [answers.get(timeout=30) for _ in range(40)]
    finally:
        client.stop_stream()
    for index, (result, error) in enumerate(got):
        assert error is None
        assert result.get_response().id == f"s-{index}"
        expected = rows(1 + index % 3, start=index) * 2 + 1
        np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), expected, rtol=1e-6)


def _stream(server: RunningServer, messages: list[bytes]) -> list[Any]:
    """Send raw messages on one stream (half-close after the last); return every answer."""
    with grpc.insecure_channel(server.grpc_url) as channel:
        call = channel.stream_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=None,
            response_deserializer=service_pb2.ModelStreamInferResponse.FromString,
        )
        return list(call(iter(messages), timeout=30))


def _request(model: str, count: int, request_id: str) -> bytes:
    message = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    message.inputs.add(name="INPUT__0", datatype="FP32", shape=[count, 4])
    message.raw_input_contents.append(rows(count).tobytes())
    return bytes(message.SerializeToString())


def test_bad_messages_get_error_answers_and_the_stream_carries_on(server: RunningServer) -> None:
    wrong_shape = service_pb2.ModelInferRequest(model_name="affine", id="bad-shape")
    wrong_shape.inputs.add(name="INPUT__0", datatype="FP32", shape=[1, 5])
    wrong_shape.raw_input_contents.append(np.zeros(5, np.float32).tobytes())
    answers = _stream(
        server,
        [
            _request("affine", 2, "ok-1"),
            b"\xff\xff\xff not a protobuf",
            _request("no-such-model", 1, "missing"),
            wrong_shape.SerializeToString(),
            _request("affine", 1, "ok-2"),
        ],
    )
    assert len(answers) == 5
    assert [a.error_message == "" for a in answers] == [True, False, False, False, True]
    assert answers[0].infer_response.id == "ok-1"
    assert "not a valid ModelInferRequest" in answers[1].error_message
    assert answers[2].infer_response.id == "missing"
    assert "no-such-model" in answers[2].error_message
    assert answers[3].infer_response.id == "bad-shape"
    out = np.frombuffer(answers[4].infer_response.raw_output_contents[0], np.float32)
    np.testing.assert_allclose(out.reshape(1, 4), rows(1) * 2 + 1, rtol=1e-6)
    for answer in answers:
        assert len(answer.error_message) < 2048


def test_statistics_count_streamed_requests(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    before = client.get_inference_statistics("affine").model_stats[0].inference_count
    answers = _stream(server, [_request("affine", 2, f"c-{i}") for i in range(5)])
    assert all(a.error_message == "" for a in answers)
    after = client.get_inference_statistics("affine").model_stats[0].inference_count
    assert after - before == 10


def test_an_empty_stream_ends_cleanly(server: RunningServer) -> None:
    assert _stream(server, []) == []
    # the server still serves unary calls and new streams afterwards
    stub_answers = _stream(server, [_request("affine", 1, "after")])
    assert stub_answers[0].infer_response.id == "after"
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerReady(service_pb2.ServerReadyRequest()).ready


class _RefusedError(Exception):
    pass


class _Context:
    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _RefusedError(code, details)


def test_streams_beyond_the_limit_are_refused_with_unavailable() -> None:
    from types import SimpleNamespace

    from ferry_runtime.transports.grpc_stream import StreamInfer

    observed: list[str] = []
    dataplane: Any = SimpleNamespace(
        metrics=SimpleNamespace(observe_request=lambda _p, outcome, _s: observed.append(outcome))
    )
    stream = StreamInfer(dataplane, max_streams=1)
    release = threading.Event()

    def open_stream() -> Iterator[bytes]:
        yield b"\xff not a protobuf"
        release.wait(10)

    first = stream(open_stream(), _Context())
    answer = next(first)  # the first stream is open and holds the only slot
    assert "not a valid ModelInferRequest" in answer.error_message
    with pytest.raises(_RefusedError) as refused:
        next(stream(iter([]), _Context()))
    assert refused.value.args[0] == grpc.StatusCode.UNAVAILABLE
    release.set()
    assert list(first) == []  # the client half-closed: the stream ends
    assert list(stream(iter([]), _Context())) == []  # and its slot is free again
    assert observed == ["invalid"]


def test_a_client_that_cancels_mid_stream_leaves_the_server_healthy(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.start_stream(callback=lambda result, error: None)
    for index in range(30):
        tensor = grpcclient.InferInput("INPUT__0", [2, 4], "FP32")
        tensor.set_data_from_numpy(rows(2, start=index))
        client.async_stream_infer("affine", [tensor], request_id=f"x-{index}")
    client.stop_stream(cancel_requests=True)
    tensor = grpcclient.InferInput("INPUT__0", [1, 4], "FP32")
    tensor.set_data_from_numpy(rows(1))
    result = client.infer("affine", [tensor])
    np.testing.assert_allclose(result.as_numpy("OUTPUT__0"), rows(1) * 2 + 1, rtol=1e-6)
    answers = _stream(server, [_request("affine", 1, "after-cancel")])
    assert answers[0].infer_response.id == "after-cancel"

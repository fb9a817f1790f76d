"""Bad input never gets a 5xx and never stops the server: every case over HTTP and gRPC."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
from runtime_helpers import FRONT_END_MODES, RunningServer, launch_server, write_model_dir
from tritonclient.grpc import service_pb2, service_pb2_grpc

LIMIT = 64 * 1024


@pytest.fixture(scope="module", params=FRONT_END_MODES)
def server(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningServer]:
    running = launch_server(
        write_model_dir(tmp_path_factory.mktemp("m")),
        max_batch_size=4,
        max_request_bytes=LIMIT,
        frontend_processes=request.param,
    )
    yield running
    assert running.stop() == 0


def infer_url(server: RunningServer, model: str = "model") -> str:
    return f"{server.http_base}/v2/models/{model}/infer"


def tensor(**overrides: Any) -> dict[str, Any]:
    body = {"name": "INPUT__0", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}
    body.update(overrides)
    return body


def binary_tensor(size: int) -> dict[str, Any]:
    """An FP32 [1, 4] input whose data follows the JSON header (binary_data_size bytes)."""
    return {
        "name": "INPUT__0",
        "datatype": "FP32",
        "shape": [1, 4],
        "parameters": {"binary_data_size": size},
    }


def binary_request(
    header: dict[str, Any], payload: bytes, header_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    head = orjson.dumps(header)
    length = len(head) if header_length is None else header_length
    return head + payload, {"Inference-Header-Content-Length": str(length)}


FOUR_FLOATS = np.arange(4, dtype=np.float32).tobytes()

HTTP_CASES: dict[str, tuple[bytes | dict[str, Any], dict[str, str], int, str]] = {
    "malformed json": (b'{"inputs": [', {}, 400, "not valid JSON"),
    "json array": (b"[1, 2]", {}, 400, "JSON object"),
    "empty body": (b"", {}, 400, "not valid JSON"),
    "no inputs": ({"inputs": []}, {}, 400, "non-empty 'inputs'"),
    "input not an object": ({"inputs": [1]}, {}, 400, "JSON object"),
    "no name": ({"inputs": [tensor(name=None)]}, {}, 400, "'name'"),
    "unknown input": ({"inputs": [tensor(name="NOPE")]}, {}, 400, "unknown input"),
    "input twice": ({"inputs": [tensor(), tensor()]}, {}, 400, "model expects inputs"),
    "wrong datatype": (
        {"inputs": [tensor(datatype="INT32")]},
        {},
        400,
        "the model expects FP32",
    ),
    "unsupported datatype": ({"inputs": [tensor(datatype="BYTES")]}, {}, 400, "unsupported"),
    "datatype not a string": ({"inputs": [tensor(datatype=7)]}, {}, 400, "unsupported"),
    "wrong row shape": (
        {"inputs": [tensor(shape=[1, 5], data=[1, 2, 3, 4, 5])]},
        {},
        400,
        "expects [-1, 4]",
    ),
    "missing batch dim": ({"inputs": [tensor(shape=[4])]}, {}, 400, "expects [-1, 4]"),
    "data count mismatch": ({"inputs": [tensor(shape=[2, 4])]}, {}, 400, "needs 8 elements"),
    "negative dim": ({"inputs": [tensor(shape=[-1, 4])]}, {}, 400, "non-negative"),
    "shape not a list": ({"inputs": [tensor(shape="1x4")]}, {}, 400, "'shape'"),
    "float dims": ({"inputs": [tensor(shape=[1.0, 4])]}, {}, 400, "non-negative integers"),
    "zero rows": ({"inputs": [tensor(shape=[0, 4], data=[])]}, {}, 400, "at least 1"),
    "too many rows": (
        {"inputs": [tensor(shape=[5, 4], data=[0] * 20)]},
        {},
        400,
        "max batch size is 4",
    ),
    "huge claimed shape": (
        {"inputs": [tensor(shape=[10**12, 10**12])]},
        {},
        400,
        "elements",
    ),
    "ragged data": ({"inputs": [tensor(data=[[1, 2], [3]])]}, {}, 400, "regular array"),
    "strings in data": ({"inputs": [tensor(data=["a", "b", "c", "d"])]}, {}, 400, "strings"),
    "objects in data": ({"inputs": [tensor(data=[{}, {}, {}, {}])]}, {}, 400, "FP32 data"),
    "data not a list": ({"inputs": [tensor(data=5)]}, {}, 400, "'data' list"),
    "unknown output": (
        {"inputs": [tensor()], "outputs": [{"name": "NOPE"}]},
        {},
        400,
        "unknown output",
    ),
    "classification": (
        {
            "inputs": [tensor()],
            "outputs": [{"name": "OUTPUT__0", "parameters": {"classification": 2}}],
        },
        {},
        400,
        "classification",
    ),
    "bad binary_data_output": (
        {"inputs": [tensor()], "parameters": {"binary_data_output": "yes"}},
        {},
        400,
        "binary_data_output",
    ),
    "header length past the body": (
        *binary_request(
            {"inputs": [binary_tensor(16)]},
            FOUR_FLOATS,
            header_length=10_000,
        ),
        400,
        "Inference-Header-Content-Length is 10000",
    ),
    "header length not a number": (
        orjson.dumps({"inputs": [tensor()]}),
        {"Inference-Header-Content-Length": "many"},
        400,
        "must be an integer",
    ),
    "header length cuts the json": (
        *binary_request({"inputs": [tensor()]}, b"", header_length=5),
        400,
        "not valid JSON",
    ),
    "binary size past the end": (
        *binary_request(
            {"inputs": [binary_tensor(64)]},
            FOUR_FLOATS,
        ),
        400,
        "runs past the end",
    ),
    "binary size not the shape's": (
        *binary_request(
            {"inputs": [binary_tensor(12)]},
            FOUR_FLOATS[:12],
        ),
        400,
        "needs 16 bytes",
    ),
    "trailing binary bytes": (
        *binary_request(
            {"inputs": [binary_tensor(16)]},
            FOUR_FLOATS + b"xx",
        ),
        400,
        "declare 16",
    ),
    "binary and json data": (
        *binary_request({"inputs": [{**tensor(), **binary_tensor(16)}]}, FOUR_FLOATS),
        400,
        "both 'data' and binary_data_size",
    ),
    "binary size negative": (
        *binary_request(
            {"inputs": [binary_tensor(-4)]},
            FOUR_FLOATS,
        ),
        400,
        "binary_data_size",
    ),
    "parameters not an object": (
        {"inputs": [tensor(parameters=[1])]},
        {},
        400,
        "'parameters'",
    ),
}


@pytest.mark.parametrize("case", sorted(HTTP_CASES))
def test_http_bad_inference_requests_get_4xx_with_a_message(
    server: RunningServer, case: str
) -> None:
    body, headers, status, message = HTTP_CASES[case]
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    response = httpx.post(infer_url(server), content=content, headers=headers)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]


def test_http_unknown_model_and_version_are_404(server: RunningServer) -> None:
    body = orjson.dumps({"inputs": [tensor()]})
    for url in (
        infer_url(server, "nope"),
        f"{server.http_base}/v2/models/model/versions/9/infer",
        f"{server.http_base}/v2/models/nope",
        f"{server.http_base}/v2/models/model/versions/9",
        f"{server.http_base}/v2/models/nope/config",
        f"{server.http_base}/v2/models/nope/ready",
    ):
        method = "POST" if url.endswith("infer") else "GET"
        response = httpx.request(method, url, content=body if method == "POST" else None)
        assert response.status_code == 404, url
        assert "unknown" in response.json()["error"]


def test_http_body_above_the_limit_is_413(server: RunningServer) -> None:
    big = b" " * (LIMIT + 1)
    response = httpx.post(infer_url(server), content=big)
    assert response.status_code == 413
    assert "exceeds the limit" in response.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while reading
        for _ in range(LIMIT // 1024 + 2):
            yield b" " * 1024

    response = httpx.post(infer_url(server), content=chunks())
    assert response.status_code == 413


def test_http_unknown_routes_and_methods_answer_json(server: RunningServer) -> None:
    missing = httpx.get(f"{server.http_base}/v2/nothing/here")
    assert missing.status_code == 404
    assert "error" in missing.json()
    wrong_method = httpx.get(infer_url(server))
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"not json", "not valid JSON"),
        (b'{"rows": []}', "instances"),
        (b'{"instances": []}', "non-empty list"),
        (b'{"instances": [[1, 2], [3]]}', "equal shape"),
        (b'{"instances": [[1, 2, 3]]}', "expects [-1, 4]"),
        (b'{"instances": [["a", "b", "c", "d"]]}', "strings"),
    ],
)
def test_predict_bad_bodies_are_400(server: RunningServer, body: bytes, message: str) -> None:
    response = httpx.post(f"{server.http_base}/v1/models/model:predict", content=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def grpc_request(**changes: Any) -> Any:
    request = service_pb2.ModelInferRequest(model_name=changes.pop("model_name", "model"))
    request.model_version = changes.pop("model_version", "")
    spec = {"name": "INPUT__0", "datatype": "FP32", "shape": [1, 4]}
    spec.update(changes.pop("tensor", {}))
    item = request.inputs.add(**spec)
    raw = changes.pop("raw", [FOUR_FLOATS])
    if raw is None:
        item.contents.fp32_contents.extend(changes.pop("fp32", [1.0, 2.0, 3.0, 4.0]))
    else:
        request.raw_input_contents.extend(raw)
    for name in changes.pop("outputs", []):
        request.outputs.add(name=name)
    assert not changes
    return request


GRPC_CASES: dict[str, tuple[Any, grpc.StatusCode, str]] = {
    "wrong datatype": (
        grpc_request(tensor={"datatype": "INT32"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "expects FP32",
    ),
    "unsupported datatype": (
        grpc_request(tensor={"datatype": "COMPLEX"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unsupported",
    ),
    "wrong shape": (
        grpc_request(tensor={"shape": [2, 2]}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "expects [-1, 4]",
    ),
    "negative dim": (
        grpc_request(tensor={"shape": [-1, 4]}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "non-negative",
    ),
    "raw size lies": (
        grpc_request(raw=[FOUR_FLOATS[:8]]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "needs 16 bytes",
    ),
    "raw entries for no input": (
        grpc_request(raw=[FOUR_FLOATS, FOUR_FLOATS]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "raw_input_contents has 2 entries",
    ),
    "typed contents count": (
        grpc_request(raw=None, fp32=[1.0]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "needs 4 elements",
    ),
    "fp16 in typed contents": (
        grpc_request(raw=None, tensor={"datatype": "FP16"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "raw_input_contents",
    ),
    "unknown input": (
        grpc_request(tensor={"name": "NOPE"}),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown input",
    ),
    "unknown output": (
        grpc_request(outputs=["NOPE"]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "unknown output",
    ),
    "too many rows": (
        grpc_request(tensor={"shape": [5, 4]}, raw=[bytes(80)]),
        grpc.StatusCode.INVALID_ARGUMENT,
        "max batch size",
    ),
    "unknown model": (
        grpc_request(model_name="nope"),
        grpc.StatusCode.NOT_FOUND,
        "unknown model",
    ),
    "unknown version": (
        grpc_request(model_version="3"),
        grpc.StatusCode.NOT_FOUND,
        "unknown version",
    ),
    "above the size limit": (
        grpc_request(tensor={"shape": [1, LIMIT]}, raw=[bytes(4 * LIMIT)]),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "",
    ),
}


@pytest.fixture(scope="module")
def stub(server: RunningServer) -> Iterator[Any]:
    channel = grpc.insecure_channel(server.grpc_url)
    yield service_pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()


@pytest.mark.parametrize("case", sorted(GRPC_CASES))
def test_grpc_bad_requests_get_the_right_status(stub: Any, case: str) -> None:
    request, code, message = GRPC_CASES[case]
    with pytest.raises(grpc.RpcError) as raised:
        stub.ModelInfer(request)
    assert raised.value.code() == code
    assert message in raised.value.details()


def test_grpc_metadata_of_unknown_model_is_not_found(stub: Any) -> None:
    for call, request in (
        (stub.ModelMetadata, service_pb2.ModelMetadataRequest(name="nope")),
        (stub.ModelConfig, service_pb2.ModelConfigRequest(name="model", version="2")),
        (stub.ModelReady, service_pb2.ModelReadyRequest(name="nope")),
    ):
        with pytest.raises(grpc.RpcError) as raised:
            call(request)
        assert raised.value.code() == grpc.StatusCode.NOT_FOUND


def test_the_server_still_serves_after_all_that(server: RunningServer, stub: Any) -> None:
    response = stub.ModelInfer(grpc_request())
    out = np.frombuffer(response.raw_output_contents[0], dtype=np.float32)
    np.testing.assert_array_equal(out, np.arange(4, dtype=np.float32) * 2 + 1)
    http = httpx.post(infer_url(server), content=orjson.dumps({"inputs": [tensor()]}))
    assert http.status_code == 200
    assert httpx.get(f"{server.http_base}/v2/health/live").status_code == 200
    assert httpx.get(f"{server.http_base}/v2/health/ready").status_code == 200
    metrics = httpx.get(f"{server.http_base}/metrics").text
    assert 'ferry_requests_total{outcome="invalid",protocol="rest"}' in metrics
    assert 'ferry_requests_total{outcome="invalid",protocol="grpc"}' in metrics
    assert 'outcome="error"' not in metrics

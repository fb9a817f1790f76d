"""Property-based fuzzing of a real server: REST from its OpenAPI document, the binary
extension and gRPC from hypothesis strategies, the codecs in-process.

Every answer must be a client error or success with a bounded message, never a 5xx or gRPC
INTERNAL/UNKNOWN, and the server must keep serving. The default suite runs few examples
(the ``ferry`` hypothesis profile, deterministic); ``make fuzz`` runs the ``ferry-fuzz``
profile: many more, random each run.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest
import schemathesis
from ferry_runtime.protocol import grpc_codec, rest_codec
from ferry_runtime.protocol.datatypes import DATATYPES
from ferry_runtime.protocol.errors import MAX_MESSAGE_CHARS, InferenceServerError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_helpers import RunningServer, launch_server, write_model_dir
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from tritonclient.grpc import service_pb2, service_pb2_grpc

MODEL_INPUTS = [
    {"name": "INPUT__0", "datatype": "FP32", "shape": [4]},
]
GRPC_CLIENT_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,  # only for a message above the size limit
    grpc.StatusCode.UNAVAILABLE,
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = launch_server(write_model_dir(tmp_path_factory.mktemp("m")), max_batch_size=4)
    yield running
    assert running.stop() == 0


@pytest.fixture(scope="module")
def api_schema(server: RunningServer) -> Any:
    """The schema as the server serves it (a test below checks it describes every route)."""
    return schemathesis.openapi.from_url(f"{server.http_base}/v2/openapi.json")


def _cases() -> list[tuple[str, str]]:
    """(operation label, generation mode): invalid data only where a body can be invalid (a
    path parameter is any string, so it has no invalid form)."""
    from ferry_runtime.protocol.types import ModelSignature, TensorSpec
    from ferry_runtime.transports.openapi import openapi_document

    spec = TensorSpec("INPUT__0", "FP32", (4,))
    document = openapi_document(ModelSignature("model", "1", "x", (spec,), (spec,), 4))
    return [
        (f"{method.upper()} {path}", mode)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        for mode in ("positive", "negative")
        if mode == "positive" or "requestBody" in operation
    ]


def _bounded_error(response: Any) -> None:
    if response.status_code >= 400 and "json" in response.headers.get("content-type", [""])[0]:
        assert len(orjson.loads(response.content)["error"]) <= MAX_MESSAGE_CHARS


CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)


@pytest.mark.parametrize(("label", "mode"), _cases())
def test_rest_api_from_its_openapi_document(api_schema: Any, label: str, mode: str) -> None:
    """Schemathesis drives each operation with valid and invalid data from the document."""
    operation = api_schema.find_operation_by_label(label)
    strategy = operation.as_strategy(generation_mode=schemathesis.GenerationMode(mode))

    @given(case=strategy)
    @settings(suppress_health_check=list(HealthCheck), deadline=None)
    def drive(case: Any) -> None:
        response = case.call(timeout=30)
        case.validate_response(response, checks=CHECKS)
        _bounded_error(response)

    drive()


# ---- the binary extension --------------------------------------------------------------------

dims = st.one_of(st.integers(0, 8), st.integers(-2, 2**63 - 1))
shapes = st.lists(dims, min_size=0, max_size=4)
names = st.one_of(st.just("INPUT__0"), st.text(max_size=20))
datatypes = st.one_of(st.sampled_from(sorted(DATATYPES)), st.text(max_size=6))


@st.composite
def binary_requests(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A JSON header + raw bytes body whose sizes agree, disagree or lie."""
    inputs = []
    payload = b""
    for _ in range(draw(st.integers(0, 3))):
        chunk = draw(st.binary(max_size=64))
        declared = draw(st.one_of(st.just(len(chunk)), st.integers(-4, 2**40)))
        entry: dict[str, Any] = {
            "name": draw(names),
            "datatype": draw(datatypes),
            "shape": draw(shapes),
            "parameters": {"binary_data_size": declared},
        }
        if draw(st.booleans()):
            entry["data"] = draw(st.lists(st.floats(allow_nan=False), max_size=4))
        inputs.append(entry)
        payload += chunk
    document: dict[str, Any] = {"inputs": inputs}
    if draw(st.booleans()):
        document["outputs"] = [{"name": draw(names), "parameters": {"binary_data": True}}]
    head = orjson.dumps(document)
    header_length = draw(st.one_of(st.just(len(head)), st.integers(-1, len(head) + 80)))
    return head + payload, {"Inference-Header-Content-Length": str(header_length)}


@given(request=binary_requests())
@settings(suppress_health_check=list(HealthCheck), deadline=None)
def test_binary_extension_bodies(
    server: RunningServer, request: tuple[bytes, dict[str, str]]
) -> None:
    body, headers = request
    reply = httpx.post(f"{server.http_base}/v2/models/model/infer", content=body, headers=headers)
    assert reply.status_code < 500, reply.text
    if reply.status_code >= 400:
        assert len(reply.json()["error"]) <= MAX_MESSAGE_CHARS


# ---- gRPC --------------------------------------------------------------------------------------


@st.composite
def grpc_requests(draw: st.DrawFn) -> bytes:
    """A ModelInferRequest with drawn fields, or bytes that may not be one at all."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.binary(max_size=200))
    request = service_pb2.ModelInferRequest(
        model_name=draw(st.one_of(st.just("model"), st.text(max_size=10))),
        model_version=draw(st.sampled_from(["", "1", "2"])),
        id=draw(st.text(max_size=5)),
    )
    raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3))):
        tensor = request.inputs.add(
            name=draw(names),
            datatype=draw(datatypes),
            shape=draw(st.lists(st.integers(-(2**63), 2**63 - 1) | st.integers(0, 6), max_size=4)),
        )
        if raw:
            request.raw_input_contents.append(draw(st.binary(max_size=64)))
        else:
            tensor.contents.fp32_contents.extend(
                draw(st.lists(st.floats(width=32, allow_nan=False), max_size=8))
            )
    for name in draw(st.lists(names, max_size=2)):
        request.outputs.add(name=name)
    data: bytes = request.SerializeToString()
    if draw(st.booleans()):  # truncated or with trailing garbage
        cut = draw(st.integers(0, len(data)))
        data = data[:cut] + draw(st.binary(max_size=8))
    return data


@pytest.fixture(scope="module")
def raw_infer(server: RunningServer) -> Iterator[Any]:
    channel = grpc.insecure_channel(server.grpc_url)
    yield channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")
    channel.close()


@given(message=grpc_requests())
@settings(suppress_health_check=list(HealthCheck), deadline=None)
def test_grpc_model_infer_messages(raw_infer: Any, message: bytes) -> None:
    code, details = grpc.StatusCode.OK, ""
    try:
        raw_infer(message, timeout=30)
    except grpc.RpcError as error:
        code, details = error.code(), error.details() or ""
    assert code in GRPC_CLIENT_CODES, (code, details)
    assert len(details) <= MAX_MESSAGE_CHARS


def test_the_server_is_healthy_after_the_fuzzing(server: RunningServer) -> None:
    assert httpx.get(f"{server.http_base}/v2/health/live").status_code == 200
    body = {"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
    reply = httpx.post(f"{server.http_base}/v2/models/model/infer", content=orjson.dumps(body))
    assert reply.json()["outputs"][0]["data"] == [3.0] * 4
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(service_pb2.ServerLiveRequest()).live
    metrics = httpx.get(f"{server.http_base}/metrics").text
    assert 'outcome="error"' not in metrics


# ---- the codecs alone (fast: many more examples) -----------------------------------------------


@given(body=st.binary(max_size=300), header_length=st.one_of(st.none(), st.integers(0, 300)))
@settings(max_examples=10 * settings.default.max_examples, deadline=None)
def test_rest_codec_raises_only_protocol_errors(body: bytes, header_length: int | None) -> None:
    message = ""
    try:
        length = rest_codec.parse_header_length(
            None if header_length is None else str(header_length), len(body)
        )
        rest_codec.decode_infer_request(bytearray(body), length, "m", "")
    except InferenceServerError as error:
        message = str(error)
    assert len(message) <= 4 * MAX_MESSAGE_CHARS


@given(message=grpc_requests())
@settings(
    max_examples=10 * settings.default.max_examples,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_grpc_codec_raises_only_protocol_errors(message: bytes) -> None:
    from google.protobuf.message import DecodeError

    try:
        request = service_pb2.ModelInferRequest.FromString(message)
    except DecodeError:
        return
    try:
        decoded = grpc_codec.decode_infer_request(request)
    except InferenceServerError:
        return
    for tensor in decoded.inputs:
        assert isinstance(tensor.data, np.ndarray)
        assert tensor.data.shape == tensor.shape


def test_the_openapi_document_describes_every_route(server: RunningServer) -> None:
    from ferry_runtime.dataplane import DataPlane
    from ferry_runtime.protocol.types import ModelSignature, TensorSpec
    from ferry_runtime.transports.rest import build_app
    from starlette.routing import Route

    spec = TensorSpec("INPUT__0", "FP32", (4,))
    app = build_app(
        DataPlane(ModelSignature("model", "1", "x", (spec,), (spec,), 4)),
        max_request_bytes=1 << 20,
    )
    served = httpx.get(f"{server.http_base}/v2/openapi.json").json()
    routes = {
        (route.path, method.lower())
        for route in app.routes
        if isinstance(route, Route)
        for method in route.methods or ()
        if method != "HEAD"
    }
    documented = {(path, method) for path, item in served["paths"].items() for method in item}
    assert routes == documented

"""Real tritonclient against a real server: HTTP JSON, HTTP binary, gRPC, metadata, config."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import orjson
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from runtime_helpers import FRONT_END_MODES, RunningServer, launch_server, write_model_dir
from torch import nn
from tritonclient.utils import InferenceServerException


class TwoHeads(nn.Module):
    """Two inputs, two outputs of different datatypes: (a + b, row sums of a as INT64)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return a + b, a.sum(dim=1, keepdim=True).to(torch.int64)


TWO_HEADS_INPUTS = [
    {"name": "A", "datatype": "FP32", "shape": [3]},
    {"name": "B", "datatype": "FP32", "shape": [3]},
]
TWO_HEADS_OUTPUTS = [
    {"name": "SUM", "datatype": "FP32", "shape": [3]},
    {"name": "TOTAL", "datatype": "INT64", "shape": [1]},
]


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


@pytest.fixture(scope="module", params=FRONT_END_MODES)
def two_heads(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[RunningServer]:
    directory = write_model_dir(
        tmp_path_factory.mktemp("two-heads"),
        TwoHeads(),
        inputs=TWO_HEADS_INPUTS,
        outputs=TWO_HEADS_OUTPUTS,
    )
    running = launch_server(
        directory,
        model_name="two",
        model_version="7",
        max_batch_size=4,
        frontend_processes=request.param,
    )
    yield running
    assert running.stop() == 0


def rows(count: int, start: float = 0.0) -> np.ndarray:
    return (np.arange(count * 4, dtype=np.float32) + start).reshape(count, 4)


def test_http_health_and_server_metadata(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("affine")
    assert client.is_model_ready("affine", "1")
    metadata = client.get_server_metadata()
    assert metadata["name"] == "ferry-runtime"
    assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(
        metadata["extensions"]
    )


def test_http_model_metadata_and_config(server: RunningServer) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    metadata = client.get_model_metadata("affine")
    assert metadata == {
        "name": "affine",
        "versions": ["1"],
        "platform": "pytorch_libtorch",
        "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [-1, 4]}],
    }
    config = client.get_model_config("affine", "1")
    assert config["name"] == "affine"
    assert config["platform"] == "pytorch_libtorch"
    assert config["max_batch_size"] == 8
    assert config["input"][0]["data_type"] == "TYPE_FP32"
    assert config["input"][0]["dims"] == [4]
    assert config["output"][0]["dims"] == [4]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 5000


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_http_infer_round_trip(server: RunningServer, binary: bool) -> None:
    client = httpclient.InferenceServerClient(server.http_url)
    data = rows(3)
    tensor = httpclient.InferInput("INPUT__0", [3, 4], "FP32")
    tensor.set_data_from_numpy(data, binary_data=binary)
    requested = httpclient.InferRequestedOutput("OUTPUT__0", binary_data=binary)
    result = client.infer("affine", [tensor], outputs=[requested], request_id="req-1")
    response = result.get_response()
    assert response["id"] == "req-1"
    assert response["model_name"] == "affine"
    assert response["model_version"] == "1"
    has_binary = "parameters" in response["outputs"][0]
    assert has_binary is binary
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), data * 2 + 1)


def test_http_default_outputs_come_back_binary(server: RunningServer) -> None:
    """tritonclient sets binary_data_output when no outputs are named."""
    client = httpclient.InferenceServerClient(server.http_url)
    tensor = httpclient.InferInput("INPUT__0", [1, 4], "FP32")
    tensor.set_data_from_numpy(rows(1))
    result = client.infer("affine", [tensor])
    output = result.get_response()["outputs"][0]
    assert output["parameters"] == {"binary_data_size": 16}
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), rows(1) * 2 + 1)


def test_http_nested_json_data_is_accepted(server: RunningServer) -> None:
    body = {
        "inputs": [
            {"name": "INPUT__0", "datatype": "FP32", "shape": [2, 4], "data": rows(2).tolist()}
        ]
    }
    response = httpx.post(f"{server.http_base}/v2/models/affine/infer", json=body)
    assert response.status_code == 200
    output = response.json()["outputs"][0]
    assert output["shape"] == [2, 4]
    assert output["data"] == (rows(2) * 2 + 1).ravel().tolist()


def test_grpc_health_metadata_and_config(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("affine")
    assert client.get_server_metadata().name == "ferry-runtime"
    metadata = client.get_model_metadata("affine", as_json=True)
    assert metadata["inputs"] == [{"name": "INPUT__0", "datatype": "FP32", "shape": ["-1", "4"]}]
    config = client.get_model_config("affine").config
    assert config.max_batch_size == 8
    assert config.platform == "pytorch_libtorch"
    assert list(config.input[0].dims) == [4]
    assert config.dynamic_batching.max_queue_delay_microseconds == 5000


def test_grpc_infer_raw_contents(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    tensor = grpcclient.InferInput("INPUT__0", [5, 4], "FP32")
    tensor.set_data_from_numpy(rows(5, start=0.5))
    result = client.infer("affine", [tensor], request_id="g-1")
    response = result.get_response()
    assert response.id == "g-1"
    assert len(response.raw_output_contents) == 1
    np.testing.assert_array_equal(result.as_numpy("OUTPUT__0"), rows(5, start=0.5) * 2 + 1)


def test_grpc_infer_typed_contents(server: RunningServer) -> None:
    """A hand-built ModelInferRequest with ``contents.fp32_contents`` (no raw contents)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    data = rows(2)
    request = service_pb2.ModelInferRequest(model_name="affine")
    tensor = request.inputs.add(name="INPUT__0", datatype="FP32", shape=[2, 4])
    tensor.contents.fp32_contents.extend(data.ravel().tolist())
    with grpc.insecure_channel(server.grpc_url) as channel:
        response = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
    assert list(response.outputs[0].shape) == [2, 4]
    out = np.frombuffer(response.raw_output_contents[0], dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(out, data * 2 + 1)


def test_grpc_unimplemented_rpcs_say_so(server: RunningServer) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_url)
    with pytest.raises(InferenceServerException) as raised:
        client.get_system_shared_memory_status()
    assert "UNIMPLEMENTED" in str(raised.value.status())


def test_statistics_count_requests_and_batches(server: RunningServer) -> None:
    http = httpclient.InferenceServerClient(server.http_url)
    before = http.get_inference_statistics("affine")["model_stats"][0]
    tensor = httpclient.InferInput("INPUT__0", [2, 4], "FP32")
    tensor.set_data_from_numpy(rows(2))
    http.infer("affine", [tensor])
    after = http.get_inference_statistics("affine")["model_stats"][0]
    assert after["name"] == "affine"
    assert after["version"] == "1"
    assert after["inference_count"] == before["inference_count"] + 2
    assert after["execution_count"] == before["execution_count"] + 1
    stats = after["inference_stats"]
    assert stats["success"]["count"] == before["inference_stats"]["success"]["count"] + 1
    assert stats["queue"]["count"] == stats["compute_infer"]["count"]
    grpc_stats = grpcclient.InferenceServerClient(server.grpc_url).get_inference_statistics(
        "affine", as_json=True
    )
    assert grpc_stats["model_stats"][0]["name"] == "affine"


def test_simple_json_predict_route(server: RunningServer) -> None:
    body = {"instances": rows(3).tolist()}
    response = httpx.post(f"{server.http_base}/v1/models/affine:predict", json=body)
    assert response.status_code == 200
    assert response.json() == {"predictions": (rows(3) * 2 + 1).tolist()}


def test_repository_index_lists_the_model(server: RunningServer) -> None:
    index = httpclient.InferenceServerClient(server.http_url).get_model_repository_index()
    assert index == [{"name": "affine", "version": "1", "state": "READY"}]


def test_metrics_endpoint_exposes_runtime_metrics(server: RunningServer) -> None:
    tensor = httpclient.InferInput("INPUT__0", [1, 4], "FP32")
    tensor.set_data_from_numpy(rows(1))
    httpclient.InferenceServerClient(server.http_url).infer("affine", [tensor])
    text = httpx.get(f"{server.http_base}/metrics").text
    for name in (
        'ferry_requests_total{outcome="success",protocol="rest"}',
        "ferry_request_duration_seconds_bucket",
        "ferry_queue_duration_seconds_bucket",
        "ferry_compute_duration_seconds_bucket",
        "ferry_batch_size_bucket",
        "ferry_queue_depth",
        "ferry_model_ready 1.0",
    ):
        assert name in text, name


def test_two_inputs_two_outputs_and_output_selection(two_heads: RunningServer) -> None:
    a = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float32)
    b = np.full((2, 3), 0.5, dtype=np.float32)
    http = httpclient.InferenceServerClient(two_heads.http_url)
    inputs = []
    for name, value in (("A", a), ("B", b)):
        tensor = httpclient.InferInput(name, [2, 3], "FP32")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    result = http.infer("two", inputs, model_version="7")
    np.testing.assert_array_equal(result.as_numpy("SUM"), a + b)
    np.testing.assert_array_equal(result.as_numpy("TOTAL"), np.array([[6], [15]]))
    only_total = http.infer(
        "two", inputs, outputs=[httpclient.InferRequestedOutput("TOTAL", binary_data=False)]
    )
    names = [output["name"] for output in only_total.get_response()["outputs"]]
    assert names == ["TOTAL"]
    assert only_total.get_response()["outputs"][0]["data"] == [6, 15]

    grpc_client = grpcclient.InferenceServerClient(two_heads.grpc_url)
    grpc_inputs = []
    for name, value in (("B", b), ("A", a)):  # any order
        tensor = grpcclient.InferInput(name, [2, 3], "FP32")
        tensor.set_data_from_numpy(value)
        grpc_inputs.append(tensor)
    result = grpc_client.infer("two", grpc_inputs, model_version="7")
    np.testing.assert_array_equal(result.as_numpy("TOTAL"), np.array([[6], [15]]))


def test_predict_with_two_outputs_returns_objects(tmp_path: Path) -> None:
    class Pair(nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return x + 1.0, x.sum(dim=1, keepdim=True)

    directory = write_model_dir(
        tmp_path / "pair",
        Pair(),
        inputs=[{"name": "X", "datatype": "FP64", "shape": [2]}],
        outputs=[
            {"name": "PLUS", "datatype": "FP64", "shape": [2]},
            {"name": "SUM", "datatype": "FP64", "shape": [1]},
        ],
    )
    running = launch_server(directory)
    try:
        response = httpx.post(
            f"{running.http_base}/v1/models/model:predict",
            content=orjson.dumps({"instances": [[1.0, 2.0], [3.0, 4.0]]}),
        )
    finally:
        assert running.stop() == 0
    assert response.status_code == 200
    assert response.json() == {
        "predictions": [{"PLUS": [2.0, 3.0], "SUM": [3.0]}, {"PLUS": [4.0, 5.0], "SUM": [7.0]}]
    }


@pytest.mark.parametrize(
    ("datatype", "numpy_type"),
    [
        ("BOOL", np.bool_),
        ("UINT8", np.uint8),
        ("INT8", np.int8),
        ("INT16", np.int16),
        ("INT32", np.int32),
        ("INT64", np.int64),
        ("FP16", np.float16),
        ("FP64", np.float64),
        ("BF16", None),
    ],
)
@pytest.mark.parametrize("front_ends", FRONT_END_MODES)
def test_every_datatype_round_trips(
    tmp_path: Path, datatype: str, numpy_type: type[np.generic] | None, front_ends: int
) -> None:
    class Identity(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.clone()

    config = [{"name": "X", "datatype": datatype, "shape": [3]}]
    directory = write_model_dir(
        tmp_path / datatype, Identity(), inputs=config, outputs=[{**config[0], "name": "Y"}]
    )
    running = launch_server(directory, max_batch_size=2, frontend_processes=front_ends)
    try:
        if numpy_type is None:  # BF16: tritonclient sends raw ml_dtypes.bfloat16 bits
            import ml_dtypes

            values = [[1.5, -2.0, 0.25], [8.0, 0.0, -0.5]]
            data = np.array(values, dtype=ml_dtypes.bfloat16)
            http = httpclient.InferenceServerClient(running.http_url)
            tensor = httpclient.InferInput("X", [2, 3], "BF16")
            tensor.set_data_from_numpy(data)
            result = http.infer("model", [tensor])
            np.testing.assert_array_equal(result.as_numpy("Y").astype(np.float32), values)
            grpc_client = grpcclient.InferenceServerClient(running.grpc_url)
            grpc_tensor = grpcclient.InferInput("X", [2, 3], "BF16")
            grpc_tensor.set_data_from_numpy(data)
            result = grpc_client.infer("model", [grpc_tensor])
            np.testing.assert_array_equal(result.as_numpy("Y").astype(np.float32), values)
            body = {"inputs": [{"name": "X", "datatype": "BF16", "shape": [2, 3], "data": values}]}
            json_out = httpx.post(f"{running.http_base}/v2/models/model/infer", json=body).json()
            assert json_out["outputs"][0]["data"] == [1.5, -2.0, 0.25, 8.0, 0.0, -0.5]
            return
        data = (np.arange(6) % 3).astype(numpy_type).reshape(2, 3)
        for binary in (True, False):
            http = httpclient.InferenceServerClient(running.http_url)
            tensor = httpclient.InferInput("X", [2, 3], datatype)
            tensor.set_data_from_numpy(data, binary_data=binary)
            requested = httpclient.InferRequestedOutput("Y", binary_data=binary)
            result = http.infer("model", [tensor], outputs=[requested])
            np.testing.assert_array_equal(result.as_numpy("Y"), data)
        grpc_client = grpcclient.InferenceServerClient(running.grpc_url)
        grpc_tensor = grpcclient.InferInput("X", [2, 3], datatype)
        grpc_tensor.set_data_from_numpy(data)
        np.testing.assert_array_equal(grpc_client.infer("model", [grpc_tensor]).as_numpy("Y"), data)
    finally:
        assert running.stop() == 0

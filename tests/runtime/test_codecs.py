"""Tensor codecs in isolation: JSON data, the binary extension, gRPC contents, BF16."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from ferry_runtime.protocol import grpc_codec, rest_codec
from ferry_runtime.protocol.datatypes import DATATYPES, bf16_from_float, bf16_to_float
from ferry_runtime.protocol.errors import InvalidInputError, UnsupportedError
from ferry_runtime.protocol.tensors import array_from_values
from ferry_runtime.protocol.types import InferOutput, InferResponse
from tritonclient.grpc import service_pb2


def test_json_request_decodes_flat_and_nested_data() -> None:
    body = orjson.dumps(
        {
            "id": "r1",
            "inputs": [
                {"name": "A", "datatype": "INT32", "shape": [2, 2], "data": [[1, 2], [3, 4]]},
                {"name": "B", "datatype": "BOOL", "shape": [2], "data": [True, False]},
            ],
            "outputs": [{"name": "Y", "parameters": {"binary_data": True}}],
            "parameters": {"binary_data_output": False},
        }
    )
    request = rest_codec.decode_infer_request(bytearray(body), None, "m", "")
    assert request.id == "r1"
    a, b = request.inputs
    assert a.data.dtype == np.int32
    assert a.data.tolist() == [[1, 2], [3, 4]]
    assert b.data.dtype == np.bool_
    assert request.outputs is not None
    assert request.outputs[0].binary is True
    assert request.binary_output is False


def test_binary_request_views_the_body_without_copies() -> None:
    data = np.arange(6, dtype=np.float32)
    header = orjson.dumps(
        {
            "inputs": [
                {
                    "name": "X",
                    "datatype": "FP32",
                    "shape": [2, 3],
                    "parameters": {"binary_data_size": 24},
                }
            ]
        }
    )
    body = bytearray(header + data.tobytes())
    request = rest_codec.decode_infer_request(body, len(header), "m", "1")
    array = request.inputs[0].data
    assert array.flags.writeable  # torch.from_numpy takes it without a copy or warning
    assert np.shares_memory(array, np.frombuffer(body, dtype=np.uint8))
    np.testing.assert_array_equal(array, data.reshape(2, 3))


def test_binary_response_puts_json_first_then_raw_tensors() -> None:
    response = InferResponse(
        model_name="m",
        model_version="1",
        id="x",
        outputs=[
            InferOutput("A", "FP32", np.ones((1, 2), dtype=np.float32), binary=True),
            InferOutput("B", "INT64", np.array([[7]], dtype=np.int64), binary=False),
        ],
    )
    body, header_length = rest_codec.encode_infer_response(response)
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    assert header["id"] == "x"
    assert header["outputs"][0] == {
        "name": "A",
        "datatype": "FP32",
        "shape": [1, 2],
        "parameters": {"binary_data_size": 8},
    }
    assert header["outputs"][1]["data"] == [7]
    assert np.frombuffer(body[header_length:], dtype=np.float32).tolist() == [1.0, 1.0]


def test_json_response_has_no_header_length() -> None:
    response = InferResponse("m", "1", [InferOutput("A", "FP16", np.ones((1, 2), np.float16))])
    body, header_length = rest_codec.encode_infer_response(response)
    assert header_length is None
    assert orjson.loads(body)["outputs"][0]["data"] == [1.0, 1.0]


@pytest.mark.parametrize(
    ("datatype", "data", "message"),
    [
        ("INT32", [1.5, 2.0], "INT32 data must be integers, got floats"),
        ("UINT8", [300, 1], "out of range for UINT8"),
        ("INT8", [-129, 1], "out of range for INT8"),
        ("BOOL", [1, 0], "BOOL data must be booleans"),
        ("FP32", ["1", "2"], "got strings"),
    ],
)
def test_json_values_must_fit_the_datatype(datatype: str, data: list[object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        array_from_values("X", DATATYPES[datatype], (2,), data)


def test_large_floats_into_fp16_become_inf_without_a_warning() -> None:
    array = array_from_values("X", DATATYPES["FP16"], (1,), [1e10])
    assert np.isinf(array).all()


def test_bf16_rounds_to_nearest_even_and_widens_exactly() -> None:
    values = np.array([1.0, 1.00390625, 1.01171875, -2.5, np.inf, np.nan], dtype=np.float32)
    bits = bf16_from_float(values)
    assert bits.dtype == np.uint16
    back = bf16_to_float(bits)
    assert back[0] == 1.0
    assert back[1] == 1.0  # exactly halfway: rounds to even
    assert back[2] == 1.015625
    assert back[3] == -2.5
    assert np.isinf(back[4])
    assert np.isnan(back[5])


def test_grpc_typed_contents_decode_with_range_checks() -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="X", datatype="INT8", shape=[1, 3])
    tensor.contents.int_contents.extend([1, -2, 3])
    decoded = grpc_codec.decode_infer_request(request)
    assert decoded.inputs[0].data.dtype == np.int8
    assert decoded.inputs[0].data.tolist() == [[1, -2, 3]]
    tensor.contents.int_contents[0] = 1000
    with pytest.raises(InvalidInputError, match="out of range for INT8"):
        grpc_codec.decode_infer_request(request)


def test_grpc_classification_is_unsupported() -> None:
    request = service_pb2.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="X", datatype="FP32", shape=[1, 1])
    tensor.contents.fp32_contents.append(1.0)
    output = request.outputs.add(name="Y")
    output.parameters["classification"].int64_param = 3
    with pytest.raises(UnsupportedError):
        grpc_codec.decode_infer_request(request)


def test_grpc_response_carries_raw_output_contents() -> None:
    response = InferResponse(
        "m", "2", [InferOutput("Y", "INT16", np.array([[1, 2]], dtype=np.int16))], id="q"
    )
    message = grpc_codec.encode_infer_response(response)
    assert message.id == "q"
    assert list(message.outputs[0].shape) == [1, 2]
    assert message.outputs[0].datatype == "INT16"
    assert np.frombuffer(message.raw_output_contents[0], dtype="<i2").tolist() == [1, 2]


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v2/models/m/infer", {"model_name": "m"}),
        ("/v2/models/m/versions/3/infer", {"model_name": "m", "model_version": "3"}),
        ("/v2/models//infer", None),
        ("/v2/models/m/versions//infer", None),
        ("/v2/models/m/ready", None),
        ("/v1/models/m/infer", None),
        ("/v2/models/m/x/3/infer", None),
        ("/infer", None),
    ],
)
def test_the_rest_shortcut_recognises_exactly_the_infer_paths(
    path: str, expected: dict[str, str] | None
) -> None:
    from ferry_runtime.transports.rest import infer_path_params

    assert infer_path_params(path) == expected

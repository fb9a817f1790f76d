"""Open Inference Protocol v2 request bodies, encoded once before a measurement, and the
decoders that check a sample response against the model's true output.

gRPC bodies are serialized ``inference.ModelInferRequest`` messages (Triton's generated stubs in
``tritonclient.grpc``); the load generator sends them as raw bytes so no protobuf work happens
per request on the client. REST bodies are OIP v2 JSON.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence

GRPC_SERVICE = "inference.GRPCInferenceService"
"""The fully qualified OIP v2 gRPC service (Triton, Ferry, MLServer)."""


def _flatten(rows: Sequence[Sequence[float]]) -> list[float]:
    return [float(v) for row in rows for v in row]


def grpc_infer_request(
    model: str, input_name: str, rows: Sequence[Sequence[float]], *, raw: bool = True
) -> bytes:
    """A serialized FP32 ``ModelInferRequest`` for ``rows`` (shape ``[len(rows), width]``).

    ``raw=True`` puts the tensor in ``raw_input_contents`` (what tritonclient sends);
    ``raw=False`` uses the typed ``contents.fp32_contents`` field.
    """
    from tritonclient.grpc import service_pb2

    flat = _flatten(rows)
    request = service_pb2.ModelInferRequest(model_name=model)
    tensor = request.inputs.add()
    tensor.name = input_name
    tensor.datatype = "FP32"
    tensor.shape.extend([len(rows), len(rows[0])])
    if raw:
        request.raw_input_contents.append(struct.pack(f"<{len(flat)}f", *flat))
    else:
        tensor.contents.fp32_contents.extend(flat)
    body: bytes = request.SerializeToString()
    return body


def http_infer_request(input_name: str, rows: Sequence[Sequence[float]]) -> bytes:
    """An OIP v2 JSON inference request body for ``rows``."""
    body = {
        "inputs": [
            {
                "name": input_name,
                "shape": [len(rows), len(rows[0])],
                "datatype": "FP32",
                "data": _flatten(rows),
            }
        ]
    }
    return json.dumps(body, separators=(",", ":")).encode()


def decode_grpc_response(body: bytes) -> list[float]:
    """The first output tensor of a serialized ``ModelInferResponse``, flattened."""
    from tritonclient.grpc import service_pb2

    response = service_pb2.ModelInferResponse.FromString(body)
    if not response.outputs:
        raise ValueError("response has no outputs")
    if response.raw_output_contents:
        raw = response.raw_output_contents[0]
        if response.outputs[0].datatype != "FP32":
            raise ValueError(f"unexpected datatype {response.outputs[0].datatype}")
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    return [float(v) for v in response.outputs[0].contents.fp32_contents]


def decode_http_response(body: bytes) -> list[float]:
    """The first output tensor of an OIP v2 JSON response, flattened."""
    document = json.loads(body)
    outputs = document.get("outputs") or []
    if not outputs:
        raise ValueError(f"response has no outputs: {body[:200]!r}")
    data = outputs[0].get("data")
    if not isinstance(data, list):
        raise ValueError("output has no data list")
    return [float(v) for v in _flatten_any(data)]


def _flatten_any(data: list[object]) -> list[float]:
    out: list[float] = []
    for item in data:
        if isinstance(item, list):
            out.extend(_flatten_any(item))
        elif isinstance(item, int | float):
            out.append(float(item))
        else:
            raise ValueError(f"non-numeric output element {item!r}")
    return out


def outputs_match(
    got: Sequence[float], expected: Sequence[float], rtol: float = 1e-3, atol: float = 1e-4
) -> bool:
    """True when ``got`` equals ``expected`` element-wise within tolerances (FP32 math may
    differ slightly between batch sizes)."""
    if len(got) != len(expected):
        return False
    return all(
        math.isclose(g, e, rel_tol=rtol, abs_tol=atol) for g, e in zip(got, expected, strict=True)
    )

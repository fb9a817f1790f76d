"""OIP v2 gRPC messages (Triton's ``inference`` package, from ``tritonclient.grpc``) ↔ types.

Inputs may come as typed ``contents`` or as ``raw_input_contents``; outputs always go back as
``raw_output_contents``, as Triton answers and as tritonclient reads by default.
"""

from __future__ import annotations

from typing import Any

from tritonclient.grpc import service_pb2

from ferry_runtime.protocol.datatypes import datatype
from ferry_runtime.protocol.errors import InvalidInputError, UnsupportedError, clip
from ferry_runtime.protocol.tensors import array_from_bytes, array_from_values, parse_shape
from ferry_runtime.protocol.types import InferInput, InferRequest, InferResponse, RequestedOutput

ModelInferRequest = service_pb2.ModelInferRequest
ModelInferResponse = service_pb2.ModelInferResponse
_OutputTensor = service_pb2.ModelInferResponse.InferOutputTensor


def decode_infer_request(message: Any) -> InferRequest:
    """Decode a ``ModelInferRequest``."""
    raw = message.raw_input_contents
    if raw and len(raw) != len(message.inputs):
        raise InvalidInputError(
            f"raw_input_contents has {len(raw)} entries for {len(message.inputs)} inputs; "
            "send every input raw or none"
        )
    if not message.inputs:
        raise InvalidInputError("inference request needs at least one input")
    inputs: list[InferInput] = []
    for index, tensor in enumerate(message.inputs):
        name = tensor.name
        dtype = datatype(tensor.datatype)
        shape = parse_shape(name, tuple(tensor.shape))
        if raw:
            array = array_from_bytes(name, dtype, shape, raw[index])
        else:
            if dtype.grpc_field is None:
                raise InvalidInputError(
                    f"input {clip(name)}: {dtype.name} data must be sent in raw_input_contents"
                )
            array = array_from_values(
                name, dtype, shape, getattr(tensor.contents, dtype.grpc_field)
            )
        inputs.append(InferInput(name, dtype.name, shape, array))

    outputs: list[RequestedOutput] | None = None
    if message.outputs:
        outputs = []
        for requested in message.outputs:
            classification = requested.parameters.get("classification")
            if classification is not None and classification.int64_param:
                raise UnsupportedError("the classification extension is not supported")
            outputs.append(RequestedOutput(requested.name))
    return InferRequest(
        model_name=message.model_name,
        model_version=message.model_version,
        inputs=inputs,
        outputs=outputs,
        id=message.id or None,
    )


def encode_infer_response(response: InferResponse) -> Any:
    """Encode a ``ModelInferResponse`` with raw output contents."""
    return ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
        outputs=[
            _OutputTensor(name=out.name, datatype=out.datatype, shape=out.data.shape)
            for out in response.outputs
        ],
        raw_output_contents=[out.data.tobytes() for out in response.outputs],
    )

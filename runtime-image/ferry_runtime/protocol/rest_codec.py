"""OIP v2 REST bodies: JSON and the binary tensor data extension.

A request body is a JSON header, optionally followed by raw tensor bytes; the
``Inference-Header-Content-Length`` header gives the JSON part's length and each binary input
declares ``parameters.binary_data_size``. A response is binary the same way when an output asks
for ``binary_data`` or the request sets ``binary_data_output`` (tritonclient's default).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from ferry_runtime.protocol.datatypes import datatype
from ferry_runtime.protocol.errors import InvalidInputError, UnsupportedError, clip
from ferry_runtime.protocol.tensors import (
    array_from_bytes,
    array_from_values,
    json_values,
    parse_shape,
)
from ferry_runtime.protocol.types import (
    InferInput,
    InferRequest,
    InferResponse,
    RequestedOutput,
)

HEADER_LENGTH = "inference-header-content-length"
"""The binary extension's HTTP header (lower case, as ASGI delivers header names)."""

JSON_CONTENT_TYPE = "application/json"
BINARY_CONTENT_TYPE = "application/octet-stream"

_DUMPS_OPTIONS = orjson.OPT_SERIALIZE_NUMPY


def dumps(document: object) -> bytes:
    """Serialise a JSON document (numpy arrays allowed)."""
    return orjson.dumps(document, option=_DUMPS_OPTIONS)


def parse_header_length(raw: str | None, body_length: int) -> int | None:
    """Validate the ``Inference-Header-Content-Length`` value against the body."""
    if raw is None:
        return None
    try:
        length = int(raw)
    except ValueError:
        raise InvalidInputError(
            f"Inference-Header-Content-Length must be an integer, got {raw[:32]!r}"
        ) from None
    if not 0 < length <= body_length:
        raise InvalidInputError(
            f"Inference-Header-Content-Length is {length} but the body has {body_length} bytes"
        )
    return length


def load_json(data: bytes | bytearray | memoryview, what: str = "request body") -> Any:
    """Parse JSON or fail with a client error naming what was malformed."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise InvalidInputError(f"{what} is not valid JSON: {error}") from None


def decode_infer_request(
    body: bytes | bytearray | memoryview,
    header_length: int | None,
    model_name: str,
    model_version: str,
) -> InferRequest:
    """Decode a REST infer body (JSON, or JSON + binary tensors) into an ``InferRequest``."""
    view = memoryview(body)
    if header_length is None:
        document = load_json(view)
        binary = view[len(view) :]
    else:
        document = load_json(view[:header_length], "inference header")
        binary = view[header_length:]
    if not isinstance(document, dict):
        raise InvalidInputError("inference request must be a JSON object")

    raw_inputs = document.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise InvalidInputError("inference request needs a non-empty 'inputs' list")
    inputs: list[InferInput] = []
    offset = 0
    for raw in raw_inputs:
        tensor, offset = _decode_input(raw, binary, offset)
        inputs.append(tensor)
    if offset != len(binary):
        raise InvalidInputError(
            f"body carries {len(binary)} bytes of binary tensor data but the inputs declare "
            f"{offset} (binary_data_size)"
        )

    parameters = _parameters(document, "request")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise InvalidInputError("parameter 'binary_data_output' must be a boolean")

    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InvalidInputError("'id' must be a string")
    return InferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        outputs=_decode_outputs(document.get("outputs")),
        id=request_id,
        binary_output=binary_output,
    )


def _decode_input(raw: object, binary: memoryview, offset: int) -> tuple[InferInput, int]:
    if not isinstance(raw, dict):
        raise InvalidInputError("each entry of 'inputs' must be a JSON object")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidInputError("each input needs a 'name' string")
    dtype = datatype(raw.get("datatype"))
    shape = parse_shape(name, raw.get("shape"))
    size = _parameters(raw, f"input {clip(name)}").get("binary_data_size")
    if size is not None:
        if type(size) is not int or size < 0:
            raise InvalidInputError(f"input {clip(name)}: binary_data_size must be an integer ≥ 0")
        if offset + size > len(binary):
            raise InvalidInputError(
                f"input {clip(name)}: binary_data_size {size} runs past the end of the body "
                f"({len(binary) - offset} bytes left)"
            )
        if "data" in raw:
            raise InvalidInputError(f"input {clip(name)} has both 'data' and binary_data_size")
        array = array_from_bytes(name, dtype, shape, binary[offset : offset + size])
        return InferInput(name, dtype.name, shape, array), offset + size
    data = raw.get("data")
    if not isinstance(data, list):
        raise InvalidInputError(f"input {clip(name)} needs a 'data' list or binary_data_size")
    array = array_from_values(name, dtype, shape, data)
    return InferInput(name, dtype.name, shape, array), offset


def _decode_outputs(raw: object) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise InvalidInputError("'outputs' must be a list")
    outputs: list[RequestedOutput] = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise InvalidInputError("each entry of 'outputs' needs a 'name' string")
        parameters = _parameters(item, f"output {clip(item['name'])}")
        if parameters.get("classification"):
            raise UnsupportedError("the classification extension is not supported")
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise InvalidInputError(f"output {clip(item['name'])}: binary_data must be a boolean")
        outputs.append(RequestedOutput(item["name"], binary))
    return outputs


def _parameters(document: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = document.get("parameters")
    if parameters is None:
        return {}
    if not isinstance(parameters, dict):
        raise InvalidInputError(f"{what}: 'parameters' must be a JSON object")
    return parameters


LARGE_OUTPUT_BYTES = 1024 * 1024
"""Binary outputs at least this large are sent as views of their arrays instead of copied."""


def encode_infer_response_parts(
    response: InferResponse,
) -> tuple[bytes, int | None, list[bytes | memoryview]]:
    """Encode a response as its first bytes, the header length and any further parts.

    Small binary outputs are joined into the first bytes (one write); when the binary outputs
    are large they follow as zero-copy views, so the response never holds them twice.
    """
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes | memoryview] = []
    large = False
    for output in response.outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.data.shape),
        }
        if output.binary:
            data = output.data
            if data.nbytes >= LARGE_OUTPUT_BYTES:
                large = True
                raw: bytes | memoryview = np.ascontiguousarray(data).reshape(-1).view(np.uint8).data
            else:
                raw = data.tobytes()
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = json_values(output.datatype, output.data)
        outputs.append(entry)
    document: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id is not None:
        document["id"] = response.id
    document["outputs"] = outputs
    header = dumps(document)
    if not chunks:
        return header, None, []
    if large:
        return header, len(header), chunks
    return b"".join((header, *chunks)), len(header), []


def encode_infer_response(response: InferResponse) -> tuple[bytes, int | None]:
    """Encode a response; returns the body and, when binary parts follow, the header length."""
    header, header_length, parts = encode_infer_response_parts(response)
    return b"".join((header, *parts)), header_length


def error_body(message: str) -> bytes:
    """The OIP REST error body."""
    return dumps({"error": message})

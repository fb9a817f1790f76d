"""Request size limits derived from the model's signature: refuse before reading or decoding.

When every input has a fixed row shape, the largest valid request is known before any byte of
it arrives: ``max_batch_size`` rows of each input, as raw bytes (binary extension, gRPC raw
contents) or as JSON numbers. A larger ``Content-Length`` (or gRPC message) is refused at once
(413 / RESOURCE_EXHAUSTED) instead of being read, parsed and then found too large.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

from ferry_runtime.protocol.datatypes import DATATYPES
from ferry_runtime.protocol.types import ModelSignature

HEAD_ALLOWANCE = 64 * 1024
"""Room for everything around the tensor data: names, shapes, parameters, outputs, id."""

JSON_CHARS_PER_ELEMENT = 48
"""Most characters one JSON number may take with its separator and indentation: the longest
shortest-round-trip float64 is 24 characters; pretty printing adds indentation."""

TYPED_CONTENTS_FACTOR = 2
"""gRPC typed contents take at most 10 bytes per 8-byte element (negative INT64 varints)."""


@dataclass(frozen=True, slots=True)
class BodyLimits:
    """Largest request body, by how its tensors travel."""

    binary: int
    """REST with the binary extension: the whole body."""
    json: int
    """REST JSON: the whole body, or the JSON header of a binary-extension body."""
    grpc: int
    """One gRPC message."""


def body_limits(
    signature: ModelSignature, max_request_bytes: int, max_json_bytes: int
) -> BodyLimits:
    """The limits for ``signature``: the configured ones, lowered for fixed-shape models."""
    json_limit = min(max_request_bytes, max_json_bytes)
    rows = signature.max_batch_size
    if any(dim < 0 for spec in signature.inputs for dim in spec.shape):
        return BodyLimits(max_request_bytes, json_limit, max_request_bytes)
    elements = [rows * prod(spec.shape) for spec in signature.inputs]
    data_bytes = sum(
        count * DATATYPES[spec.datatype].itemsize
        for count, spec in zip(elements, signature.inputs, strict=True)
    )
    return BodyLimits(
        binary=min(max_request_bytes, HEAD_ALLOWANCE + data_bytes),
        json=min(json_limit, HEAD_ALLOWANCE + sum(elements) * JSON_CHARS_PER_ELEMENT),
        grpc=min(max_request_bytes, HEAD_ALLOWANCE + data_bytes * TYPED_CONTENTS_FACTOR),
    )

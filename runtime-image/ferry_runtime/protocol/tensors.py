"""Tensor conversions shared by both protocols: shapes, JSON data and raw bytes ↔ numpy."""

from __future__ import annotations

from collections.abc import Iterable
from math import prod

import numpy as np

from ferry_runtime.protocol.datatypes import Datatype, bf16_from_float, bf16_to_float
from ferry_runtime.protocol.errors import InvalidInputError, clip

MAX_DIMS = 16
"""Most dimensions a tensor may have (Triton allows about this many)."""

MAX_ELEMENTS = 2**31
"""Most elements a shape may describe, counting an empty dimension as 1.

A tensor with data carries at least one byte per element and a request is at most 2 GiB, so
no real tensor is larger; the bound also keeps an empty tensor with an astronomically large
other dimension (``[2**62, 0]``) from reaching numpy, which refuses such shapes."""


def parse_shape(name: str, raw: object) -> tuple[int, ...]:
    """Validate a client-given shape: a list of non-negative integers."""
    if not isinstance(raw, (list, tuple)):
        raise InvalidInputError(f"input {clip(name)}: 'shape' must be a list of integers")
    shape = tuple(raw)
    if not 1 <= len(shape) <= MAX_DIMS:
        raise InvalidInputError(f"input {clip(name)}: shape must have 1 to {MAX_DIMS} dimensions")
    span = 1
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise InvalidInputError(
                f"input {clip(name)}: shape {clip(list(shape))} must hold non-negative integers"
            )
        span *= dim or 1
        if span > MAX_ELEMENTS:
            raise InvalidInputError(
                f"input {clip(name)}: shape {clip(list(shape))} describes more than "
                f"{MAX_ELEMENTS} elements"
            )
    return shape


def element_count(shape: tuple[int, ...]) -> int:
    """Number of elements of a tensor of ``shape``."""
    return prod(shape)


def array_from_bytes(
    name: str, dtype: Datatype, shape: tuple[int, ...], buffer: bytes | bytearray | memoryview
) -> np.ndarray:
    """View raw little-endian tensor bytes as an array of ``shape`` (no copy)."""
    expected = element_count(shape) * dtype.itemsize
    if len(buffer) != expected:
        raise InvalidInputError(
            f"input {clip(name)}: {dtype.name} shape {clip(list(shape))} needs {expected} bytes, "
            f"got {len(buffer)}"
        )
    return np.frombuffer(buffer, dtype=dtype.numpy).reshape(shape)


def array_from_values(
    name: str, dtype: Datatype, shape: tuple[int, ...], values: Iterable[object]
) -> np.ndarray:
    """Build an array of ``shape`` from JSON data (flat or nested) or typed gRPC contents."""
    try:
        raw = np.array(values)
    except (ValueError, TypeError, OverflowError) as error:
        raise InvalidInputError(
            f"input {clip(name)}: data is not a regular array of numbers"
        ) from error
    count = element_count(shape)
    if raw.size != count:
        raise InvalidInputError(
            f"input {clip(name)}: shape {clip(list(shape))} needs {count} elements, "
            f"data has {raw.size}"
        )
    if count == 0:
        return np.zeros(shape, dtype=dtype.numpy)
    if raw.dtype.kind not in dtype.json_kinds:
        raise InvalidInputError(
            f"input {clip(name)}: {dtype.name} data must be {_KIND_WORDS[dtype.json_kinds]}, "
            f"got {_describe_kind(raw.dtype.kind)}"
        )
    if dtype.name == "BF16":
        return bf16_from_float(raw.astype(np.float32)).reshape(shape)
    target = dtype.numpy
    if raw.dtype.kind in "iu" and target.kind in "iu":
        info = np.iinfo(target.type)  # type: ignore[type-var]  # an integer dtype here
        if int(raw.min()) < info.min or int(raw.max()) > info.max:
            raise InvalidInputError(f"input {clip(name)}: values out of range for {dtype.name}")
    with np.errstate(over="ignore", invalid="ignore"):
        return raw.astype(target, copy=False).reshape(shape)


_KIND_WORDS = {"b": "booleans", "biu": "integers", "biuf": "numbers"}


def _describe_kind(kind: str) -> str:
    return {
        "b": "booleans",
        "i": "integers",
        "u": "integers",
        "f": "floats",
        "U": "strings",
        "S": "bytes",
        "O": "mixed or non-numeric values",
    }.get(kind, "unsupported values")


def json_values(dtype_name: str, array: np.ndarray) -> np.ndarray:
    """A flat, C-contiguous array that orjson can write as the OIP JSON ``data`` list."""
    if dtype_name == "BF16":
        return bf16_to_float(array).reshape(-1)
    return np.ascontiguousarray(array).reshape(-1)

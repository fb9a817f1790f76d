"""Tensor conversions shared by both protocols: shapes, JSON data and raw bytes ↔ numpy."""

from __future__ import annotations

from collections.abc import Iterable
from math import prod

import numpy as np

from ferry_runtime.protocol.datatypes import Datatype, bf16_from_float, bf16_to_float
from ferry_runtime.protocol.errors import InvalidInputError

MAX_DIMS = 16
"""Most dimensions a tensor may have (Triton allows about this many)."""


def parse_shape(name: str, raw: object) -> tuple[int, ...]:
    """Validate a client-given shape: a list of non-negative integers."""
    if not isinstance(raw, (list, tuple)):
        raise InvalidInputError(f"input {name!r}: 'shape' must be a list of integers")
    shape = tuple(raw)
    if not 1 <= len(shape) <= MAX_DIMS:
        raise InvalidInputError(f"input {name!r}: shape must have 1 to {MAX_DIMS} dimensions")
    for dim in shape:
        if type(dim) is not int or dim < 0:
            raise InvalidInputError(
                f"input {name!r}: shape {list(shape)!r} must hold non-negative integers"
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
            f"input {name!r}: {dtype.name} shape {list(shape)} needs {expected} bytes, "
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
            f"input {name!r}: data is not a regular array of numbers"
        ) from error
    count = element_count(shape)
    if raw.size != count:
        raise InvalidInputError(
            f"input {name!r}: shape {list(shape)} needs {count} elements, data has {raw.size}"
        )
    if count == 0:
        return np.zeros(shape, dtype=dtype.numpy)
    if raw.dtype.kind not in dtype.json_kinds:
        raise InvalidInputError(
            f"input {name!r}: {dtype.name} data must be {_KIND_WORDS[dtype.json_kinds]}, "
            f"got {_describe_kind(raw.dtype.kind)}"
        )
    if dtype.name == "BF16":
        return bf16_from_float(raw.astype(np.float32)).reshape(shape)
    target = dtype.numpy
    if raw.dtype.kind in "iu" and target.kind in "iu":
        info = np.iinfo(target.type)  # type: ignore[type-var]  # an integer dtype here
        if int(raw.min()) < info.min or int(raw.max()) > info.max:
            raise InvalidInputError(f"input {name!r}: values out of range for {dtype.name}")
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

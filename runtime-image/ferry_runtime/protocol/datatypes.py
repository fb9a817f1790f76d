"""OIP v2 datatypes and their numpy, Triton model-config and gRPC counterparts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ferry_runtime.protocol.errors import InvalidInputError, clip


@dataclass(frozen=True, slots=True)
class Datatype:
    """One OIP datatype.

    ``numpy`` is the little-endian dtype that holds its wire bytes (BF16 travels as ``<u2``:
    numpy has no bfloat16, the model layer reinterprets it). ``grpc_field`` names the typed
    ``InferTensorContents`` field, or ``None`` where only raw contents carry it.
    """

    name: str
    numpy: np.dtype[np.generic]
    triton: str
    grpc_field: str | None
    json_kinds: str

    @property
    def itemsize(self) -> int:
        """Bytes per element on the wire."""
        return self.numpy.itemsize


def _dt(name: str, dtype: str, grpc_field: str | None, json_kinds: str) -> Datatype:
    return Datatype(name, np.dtype(dtype), f"TYPE_{name}", grpc_field, json_kinds)


_INTS = "biu"
_FLOATS = "biuf"

DATATYPES: dict[str, Datatype] = {
    d.name: d
    for d in (
        _dt("BOOL", "?", "bool_contents", "b"),
        _dt("UINT8", "u1", "uint_contents", _INTS),
        _dt("INT8", "i1", "int_contents", _INTS),
        _dt("INT16", "<i2", "int_contents", _INTS),
        _dt("INT32", "<i4", "int_contents", _INTS),
        _dt("INT64", "<i8", "int64_contents", _INTS),
        _dt("FP16", "<f2", None, _FLOATS),
        _dt("FP32", "<f4", "fp32_contents", _FLOATS),
        _dt("FP64", "<f8", "fp64_contents", _FLOATS),
        _dt("BF16", "<u2", None, _FLOATS),
    )
}
"""The datatypes a model config may use (docs/contracts.md)."""

SUPPORTED = ", ".join(DATATYPES)


def datatype(name: object) -> Datatype:
    """Look up a datatype by its OIP name, or fail with a client error."""
    found = DATATYPES.get(name) if isinstance(name, str) else None
    if found is None:
        raise InvalidInputError(f"unsupported datatype {clip(name)}; supported: {SUPPORTED}")
    return found


def bf16_from_float(values: np.ndarray) -> np.ndarray:
    """Round float values to bfloat16 bits (round to nearest even), as ``uint16``."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + (np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
    out = (rounded >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        out[nan] = 0x7FC0
    return out


def bf16_to_float(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 bits (``uint16``) to ``float32`` exactly."""
    return (np.ascontiguousarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)

"""Plain request/response types shared by the codecs, the DataPlane and the transports.

Slotted dataclasses, not pydantic models: they are built once per request on the hot path and
the codecs already validate what they put in them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A model input or output: OIP name, datatype and per-row shape (``-1``: variable)."""

    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class DynamicBatching:
    """What the server advertises about its dynamic batcher (Triton model config)."""

    max_queue_delay_us: int
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_size: int = 0


@dataclass(frozen=True, slots=True)
class ModelSignature:
    """Everything the protocol layer knows about the served model."""

    name: str
    version: str
    platform: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    dynamic_batching: DynamicBatching | None = None
    device: str = "cpu"


@dataclass(slots=True)
class InferInput:
    """One decoded input tensor; ``data`` already has ``shape``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray


@dataclass(slots=True)
class RequestedOutput:
    """An output the client asked for; ``binary`` is the REST ``binary_data`` parameter."""

    name: str
    binary: bool | None = None


@dataclass(slots=True)
class InferRequest:
    """A decoded inference request (either protocol)."""

    model_name: str
    model_version: str
    inputs: list[InferInput]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    binary_output: bool = False
    """REST ``binary_data_output``: binary for every output that does not say otherwise."""


@dataclass(slots=True)
class InferOutput:
    """One output tensor of a response; ``binary`` is how REST should send it."""

    name: str
    datatype: str
    data: np.ndarray
    binary: bool = False


@dataclass(slots=True)
class InferResponse:
    """An inference response (either protocol)."""

    model_name: str
    model_version: str
    outputs: list[InferOutput] = field(default_factory=list)
    id: str | None = None

"""``model.json``: tensor names, datatypes and per-row shapes (docs/contracts.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ferry_runtime.model.base import ModelLoadError
from ferry_runtime.protocol.types import TensorSpec

CONFIG_FILE = "model.json"
MAX_CONFIG_BYTES = 1 << 20

OipDatatype = Literal[
    "BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64", "BF16"
]


class TensorConfig(BaseModel):
    """One input or output tensor."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=256, pattern=r"^[A-Za-z0-9_.:\-]+$")
    """Tensor name as clients send it (e.g. ``INPUT__0``)."""
    datatype: OipDatatype
    """Open Inference Protocol datatype."""
    shape: list[int] = Field(max_length=15)
    """Shape of one row, without the batch dimension; ``-1`` marks a variable dimension."""

    @field_validator("shape")
    @classmethod
    def _dims(cls, shape: list[int]) -> list[int]:
        bad = [dim for dim in shape if dim == 0 or dim < -1]
        if bad:
            raise ValueError(f"dimensions must be positive or -1, got {bad}")
        return shape

    def spec(self) -> TensorSpec:
        """The protocol-level view of this tensor."""
        return TensorSpec(self.name, self.datatype, tuple(self.shape))


class ModelConfigFile(BaseModel):
    """The whole ``model.json``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: list[TensorConfig] = Field(min_length=1, max_length=64)
    """Inputs, in the order ``forward`` takes them."""
    outputs: list[TensorConfig] = Field(min_length=1, max_length=64)
    """Outputs, in the order ``forward`` returns them."""

    @model_validator(mode="after")
    def _unique_names(self) -> ModelConfigFile:
        for kind, tensors in (("input", self.inputs), ("output", self.outputs)):
            names = [tensor.name for tensor in tensors]
            duplicates = sorted({name for name in names if names.count(name) > 1})
            if duplicates:
                raise ValueError(f"{kind} names must be unique, repeated: {duplicates}")
        return self


def load_model_config(model_dir: Path) -> ModelConfigFile:
    """Read and validate ``model_dir/model.json``; errors name the file and the field."""
    path = model_dir / CONFIG_FILE
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ModelLoadError(
            f"{path} not found: a model directory holds model.pt and model.json "
            "(tensor names, datatypes and shapes; see docs/contracts.md)"
        ) from None
    except OSError as error:
        raise ModelLoadError(f"cannot read {path}: {error}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ModelLoadError(f"{path} is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        return ModelConfigFile.model_validate_json(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc']) or '(root)'}: {issue['msg']}"
            for issue in error.errors(include_url=False)
        )
        raise ModelLoadError(f"{path} is invalid: {problems}") from None

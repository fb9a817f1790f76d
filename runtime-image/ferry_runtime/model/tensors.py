"""Shared by every torch format: numpy batches in, the module called positionally, numpy out."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

import numpy as np
import torch

from ferry_runtime.model.base import Model
from ferry_runtime.protocol.types import TensorSpec

TORCH_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "FP16": torch.float16,
    "FP32": torch.float32,
    "FP64": torch.float64,
    "BF16": torch.bfloat16,
}


class ModelOutputError(RuntimeError):
    """The model returned something its ``model.json`` does not describe."""


class TorchModel(Model):
    """A torch callable (TorchScript module, exported program's module, AOTInductor runner)
    that takes the inputs positionally and returns a tensor or a sequence of tensors."""

    def __init__(
        self,
        module: Callable[..., object],
        inputs: tuple[TensorSpec, ...],
        outputs: tuple[TensorSpec, ...],
        device: torch.device,
    ) -> None:
        self.module = module
        self.inputs = inputs
        self.outputs = outputs
        self.device = str(device)
        self._device = device
        self._on_cpu = device.type == "cpu"
        self._out_dtypes = [TORCH_DTYPES[spec.datatype] for spec in outputs]

    def thread_context(self) -> AbstractContextManager[object]:
        """Every forward pass runs under ``torch.inference_mode()``."""
        return torch.inference_mode()

    def forward(self, inputs: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run one batch on the model's device and bring the outputs back as numpy."""
        tensors = [
            self._to_tensor(array, spec) for array, spec in zip(inputs, self.inputs, strict=True)
        ]
        result = self.module(*tensors)
        if isinstance(result, torch.Tensor):
            produced: Sequence[object] = (result,)
        elif isinstance(result, (tuple, list)):
            produced = result
        else:
            raise ModelOutputError(
                f"model returned {type(result).__name__}; expected a tensor or a tuple of tensors"
            )
        if len(produced) != len(self.outputs):
            raise ModelOutputError(
                f"model returned {len(produced)} outputs but model.json lists {len(self.outputs)}"
            )
        rows = inputs[0].shape[0]
        return [
            self._to_numpy(tensor, spec, dtype, rows)
            for tensor, spec, dtype in zip(produced, self.outputs, self._out_dtypes, strict=True)
        ]

    def _to_tensor(self, array: np.ndarray, spec: TensorSpec) -> torch.Tensor:
        if not array.flags.writeable:
            # torch warns on read-only buffers (gRPC bytes); one copy of the batch input
            array = array.copy()
        tensor = torch.from_numpy(array)
        if spec.datatype == "BF16":
            tensor = tensor.view(torch.bfloat16)
        if not self._on_cpu:
            tensor = tensor.to(self._device, non_blocking=True)
        return tensor

    def _to_numpy(
        self, tensor: object, spec: TensorSpec, dtype: torch.dtype, rows: int
    ) -> np.ndarray:
        if not isinstance(tensor, torch.Tensor):
            raise ModelOutputError(f"output {spec.name!r} is {type(tensor).__name__}, not a tensor")
        if tensor.dtype != dtype:
            raise ModelOutputError(
                f"output {spec.name!r} is {tensor.dtype} but model.json says {spec.datatype}"
            )
        shape = tuple(tensor.shape)
        if (
            len(shape) != len(spec.shape) + 1
            or shape[0] != rows
            or any(want not in (-1, got) for want, got in zip(spec.shape, shape[1:], strict=True))
        ):
            raise ModelOutputError(
                f"output {spec.name!r} has shape {list(shape)}; model.json says "
                f"[{rows}, *{list(spec.shape)}] for a batch of {rows}"
            )
        tensor = tensor.detach()
        if not self._on_cpu:
            tensor = tensor.cpu()
        if dtype == torch.bfloat16:
            tensor = tensor.view(torch.uint16)
        return tensor.numpy()

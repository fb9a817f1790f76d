"""TorchScript models: ``torch.jit.load`` archives (``model.pt``) driven with numpy in and out."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ferry_runtime.model.base import ModelLoadError
from ferry_runtime.model.tensors import TORCH_DTYPES, ModelOutputError, TorchModel
from ferry_runtime.protocol.types import TensorSpec

__all__ = ["TORCH_DTYPES", "ModelOutputError", "TorchScriptModel", "load_torchscript"]


class TorchScriptModel(TorchModel):
    """A ``torch.jit.ScriptModule`` whose ``forward`` takes the inputs positionally."""


def load_torchscript(
    path: Path,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    device: torch.device,
) -> TorchScriptModel:
    """``torch.jit.load`` the archive at ``path`` onto ``device`` (no pickles: TorchScript's
    own format, checked by :func:`ferry_runtime.model.loader.detect_format` first)."""
    try:
        with warnings.catch_warnings():
            # torch ≥ 2.10 deprecates torch.jit.*; TorchScript stays a format Ferry serves for
            # existing models (new ones: torch.export, docs/contracts.md).
            warnings.filterwarnings(
                "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
            )
            # torch.jit.load is not annotated in torch's stubs.
            module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    except Exception as error:  # torch raises RuntimeError and friends for bad archives
        raise ModelLoadError(f"torch.jit.load({path}) failed: {first_line(error)}") from None
    module.eval()
    return TorchScriptModel(module, inputs, outputs, device)


def first_line(error: BaseException) -> str:
    """The first line of an exception's message (torch's are often pages long)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__

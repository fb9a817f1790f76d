"""The format benchmark's models, written in every format Ferry serves.

- ``medium``: the runtime benchmark's MLP 512-2048-2048-10.
- ``cnn``: a small CIFAR-10-style CNN (conv 3→32, batch norm, ReLU, max-pool, conv 32→64,
  batch norm, ReLU, max-pool, linear 4096→10). It takes each image flattened to FP32[3072]
  (3x32x32, reshaped in ``forward``) so the runtime benchmark's payload builders, which send
  ``[rows, width]`` tensors, serve it unchanged.

Each model is written as TorchScript (``model.pt``, scripted), an exported program and an
AOTInductor package (``model.pt2``, by ``ferry-runtime package``'s own code path, which checks
them against eager).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from bench.runtime.models import INPUT_NAME, OUTPUT_NAME, SEED

FORMATS = ("torchscript", "exported-program", "aot-inductor")


@dataclass(frozen=True)
class FormatModel:
    """One benchmark model."""

    name: str
    input_width: int
    output_width: int
    description: str


MODELS = {
    "medium": FormatModel("medium", 512, 10, "MLP 512-2048-2048-10"),
    "cnn": FormatModel(
        "cnn",
        3 * 32 * 32,
        10,
        "CIFAR-10-style CNN: 2x(conv3x3, batch norm, ReLU, max-pool), linear",
    ),
}


class CifarCnn(nn.Module):
    """Small CIFAR-10-style CNN over flattened 3x32x32 images."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(64 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        images = x.reshape(-1, 3, 32, 32)
        return self.classifier(self.features(images).flatten(1))


def build(name: str) -> nn.Module:
    """The model ``name`` with seeded weights (and non-trivial batch-norm statistics)."""
    torch.manual_seed(SEED)
    if name == "medium":
        module: nn.Module = nn.Sequential(
            nn.Linear(512, 2048), nn.ReLU(), nn.Linear(2048, 2048), nn.ReLU(), nn.Linear(2048, 10)
        )
    elif name == "cnn":
        module = CifarCnn()
        for layer in module.modules():
            if isinstance(layer, nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.1, 0.1)
                layer.running_var.uniform_(0.5, 1.5)
    else:
        raise ValueError(f"unknown model {name!r}")
    return module.eval()


def build_medium() -> nn.Module:
    """Factory for ``ferry-runtime package``."""
    return build("medium")


def build_cnn() -> nn.Module:
    """Factory for ``ferry-runtime package``."""
    return build("cnn")


def write_format(model: FormatModel, model_format: str, directory: Path) -> Path:
    """Write ``model`` in ``model_format`` into ``directory``; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [model.input_width]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [model.output_width]}],
    }
    if model_format == "torchscript":
        with warnings.catch_warnings():
            # the deprecated format is measured on purpose: it is the baseline
            warnings.filterwarnings(
                "ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning
            )
            torch.jit.save(torch.jit.script(build(model.name)), str(directory / "model.pt"))
        (directory / "model.json").write_text(json.dumps(config, indent=2) + "\n")
        return directory
    from ferry_runtime.model.package import (
        InputSpec,
        PackageRequest,
        package_format,
        package_model,
    )

    package_model(
        PackageRequest(
            factory=f"{Path(__file__).resolve()}:build_{model.name}",
            inputs=(InputSpec(INPUT_NAME, "FP32", (-1, model.input_width)),),
            outputs=(OUTPUT_NAME,),
            out=directory,
            format=package_format(model_format),
        )
    )
    return directory

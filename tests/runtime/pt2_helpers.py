"""Tiny PyTorch 2 models for the runtime tests, packaged once per test session.

``build_tiny`` is the factory ``ferry-runtime package`` imports; ``package_dir`` runs the real
packaging (export, AOTInductor compile, check against eager); ``rewrite_zip`` edits one entry
of an archive to make the bad files the loader must refuse.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

IN_FEATURES = 4
OUT_FEATURES = 3


class TinyNet(nn.Module):
    """Linear → ReLU, plus a second head (x summed per row), so outputs are a tuple."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(IN_FEATURES, OUT_FEATURES)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.relu(self.linear(x)), x.sum(dim=1, keepdim=True)


def build_tiny() -> nn.Module:
    """The factory the tests package."""
    return TinyNet().eval()


class Drifting(nn.Module):
    """Adds fresh noise on every call: whatever it is packaged as disagrees with eager."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + torch.rand_like(x)


def build_drifting() -> nn.Module:
    return Drifting()


def eager(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """What the served model must answer for ``rows``."""
    with torch.inference_mode():
        first, second = build_tiny()(rows)
    return first, second


def package_dir(
    out: Path,
    model_format: str,
    factory: str = "build_tiny",
    outputs: tuple[str, ...] = ("scores", "total"),
) -> str:
    """``ferry-runtime package`` of ``factory`` into ``out``; returns model.pt2's sha256."""
    from ferry_runtime.model.package import (
        InputSpec,
        PackageRequest,
        package_format,
        package_model,
    )

    return package_model(
        PackageRequest(
            factory=f"{Path(__file__).resolve()}:{factory}",
            inputs=(InputSpec("x", "FP32", (-1, IN_FEATURES)),),
            outputs=outputs,
            out=out,
            format=package_format(model_format),
        )
    )


def rewrite_zip(source: Path, target: Path, edit: Callable[[str, bytes], bytes | None]) -> None:
    """Copy ``source`` to ``target``; ``edit(name, data)`` returns new data, or None to drop."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            data = edit(info.filename, old.read(info.filename))
            if data is not None:
                new.writestr(info, data)

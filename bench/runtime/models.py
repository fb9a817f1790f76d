"""The benchmark's models: made here as TorchScript + ``model.json`` (docs/contracts.md)."""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INPUT_NAME = "INPUT__0"
OUTPUT_NAME = "OUTPUT__0"
SEED = 20240601


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark model: an MLP with the given layer widths, or a no-op."""

    name: str
    widths: tuple[int, ...]
    """Layer widths from input to output; a single width means the no-op (output = input)."""
    description: str

    @property
    def input_width(self) -> int:
        """Features per input row."""
        return self.widths[0]

    @property
    def output_width(self) -> int:
        """Features per output row."""
        return self.widths[-1]

    @property
    def flops_per_row(self) -> int:
        """Multiply-adds x2 of one row's forward pass (0 for the no-op)."""
        return sum(2 * a * b for a, b in zip(self.widths, self.widths[1:], strict=False))


MODELS: dict[str, ModelSpec] = {
    "noop": ModelSpec("noop", (16,), "no-op: returns its FP32[16] input (pure serving overhead)"),
    "tiny": ModelSpec("tiny", (64, 256, 256, 10), "tiny MLP 64-256-256-10"),
    "medium": ModelSpec("medium", (512, 2048, 2048, 10), "medium MLP 512-2048-2048-10"),
}


def model_config(spec: ModelSpec) -> dict[str, object]:
    """The ``model.json`` of ``spec`` (per-row shapes, no batch dimension)."""
    return {
        "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [spec.input_width]}],
        "outputs": [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [spec.output_width]}],
    }


@contextlib.contextmanager
def torchscript_allowed() -> Iterator[None]:
    """Silence torch's ``torch.jit.* is deprecated`` warning: TorchScript is the format Ferry
    (and the peers' custom runtimes here) serve."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        yield


def build_module(spec: ModelSpec) -> object:
    """A scripted ``torch.jit.ScriptModule`` for ``spec`` with seeded weights."""
    import torch
    from torch import nn

    class NoOp(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # A fresh tensor (not the input itself), as any real model returns.
            return x.clone()

    torch.manual_seed(SEED)
    if len(spec.widths) == 1:
        module: nn.Module = NoOp()
    else:
        layers: list[nn.Module] = []
        pairs = list(zip(spec.widths, spec.widths[1:], strict=False))
        for index, (width_in, width_out) in enumerate(pairs):
            layers.append(nn.Linear(width_in, width_out))
            if index < len(pairs) - 1:
                layers.append(nn.ReLU())
        module = nn.Sequential(*layers)
    module.eval()
    with torchscript_allowed():
        return torch.jit.script(module)


def write_model_dir(spec: ModelSpec, directory: Path) -> Path:
    """Write ``model.pt`` and ``model.json`` for ``spec`` into ``directory``; return it."""
    import torch

    directory.mkdir(parents=True, exist_ok=True)
    scripted = build_module(spec)
    with torchscript_allowed():
        torch.jit.save(scripted, str(directory / "model.pt"))
    (directory / "model.json").write_text(json.dumps(model_config(spec), indent=2) + "\n")
    return directory


def sample_input(spec: ModelSpec, rows: int = 1, seed: int = 7) -> list[list[float]]:
    """Deterministic input rows in [-1, 1) (plain floats, exactly representable in FP32)."""
    import random

    rng = random.Random(seed)
    return [
        [round(rng.uniform(-1.0, 1.0) * 1024) / 1024 for _ in range(spec.input_width)]
        for _ in range(rows)
    ]


def reference_output(model_dir: Path, rows: list[list[float]]) -> list[list[float]]:
    """The model's output for ``rows``, computed in-process: the truth responses are checked
    against."""
    import torch

    with torchscript_allowed():
        # torch.jit.load is not annotated in torch's stubs.
        module = torch.jit.load(str(model_dir / "model.pt"))  # type: ignore[no-untyped-call]
    with torch.inference_mode():
        out = module(torch.tensor(rows, dtype=torch.float32))
    result: list[list[float]] = out.tolist()
    return result

"""Write Ferry's example model, a small MLP, in any of the formats Ferry serves.

    python examples/make_example_model.py DIR [--format FORMAT] [--hidden 128] [--seed 0]

FORMAT is ``torchscript`` (the default, DIR/model.pt + model.json; kept for the existing
quickstart, PyTorch deprecates TorchScript), ``exported-program`` or ``aot-inductor``
(DIR/model.pt2 + model.json, made with the same code path as ``ferry-runtime package``; the
AOTInductor package needs a C++ compiler), or ``all`` (one subdirectory of DIR per format).

INPUT__0 (FP32, 64 features per row) → OUTPUT__0 (FP32, 10 scores per row). Prints the
SHA-256 of the served file (what ``spec.model.sha256`` / ``FERRY_RUNTIME_MODEL_SHA256`` expect),
one line per format with ``all``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from functools import partial
from pathlib import Path

import torch
from torch import nn

INPUT_FEATURES = 64
OUTPUT_FEATURES = 10
FORMATS = ("torchscript", "exported-program", "aot-inductor")


def build_mlp(hidden: int = 128, seed: int = 0) -> nn.Module:
    """The example MLP with deterministic weights (``ferry-runtime package`` factory)."""
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(INPUT_FEATURES, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, OUTPUT_FEATURES),
    ).eval()


def model_json() -> dict[str, object]:
    """The model.json that describes the example MLP."""
    return {
        "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [INPUT_FEATURES]}],
        "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [OUTPUT_FEATURES]}],
    }


def write_torchscript(directory: Path, hidden: int = 128, seed: int = 0) -> str:
    """Write model.pt and model.json; return model.pt's SHA-256."""
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / "model.pt"
    with warnings.catch_warnings():
        # TorchScript is the deprecated format this example still offers for existing setups;
        # the PyTorch 2 formats below use no deprecated API.
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        scripted = torch.jit.script(build_mlp(hidden, seed))
        torch.jit.save(scripted, str(model_path))
    (directory / "model.json").write_text(json.dumps(model_json(), indent=2) + "\n")
    return hashlib.sha256(model_path.read_bytes()).hexdigest()


def write_pt2(directory: Path, model_format: str, hidden: int = 128, seed: int = 0) -> str:
    """Export (and for aot-inductor compile) the MLP into model.pt2 + model.json."""
    from ferry_runtime.model.package import (
        InputSpec,
        PackageRequest,
        package_format,
        package_model,
    )

    factory = f"{Path(__file__).resolve()}:build_mlp"
    if (hidden, seed) != (128, 0):
        factory = _register_factory(partial(build_mlp, hidden, seed))
    return package_model(
        PackageRequest(
            factory=factory,
            inputs=(InputSpec("INPUT__0", "FP32", (-1, INPUT_FEATURES)),),
            outputs=("OUTPUT__0",),
            out=directory,
            format=package_format(model_format),
        )
    )


def _register_factory(factory: object) -> str:
    """Make a configured factory importable as ``module:attr`` for the packager."""
    import sys
    import types

    module = types.ModuleType("_ferry_example_factory")
    # a module made at run time has no declared attributes; the packager imports this one
    module.build = factory  # type: ignore[attr-defined]
    sys.modules[module.__name__] = module
    return f"{module.__name__}:build"


def write_example_model(
    directory: Path, hidden: int = 128, seed: int = 0, model_format: str = "torchscript"
) -> str:
    """Write the example in ``model_format`` into ``directory``; return the served file's
    SHA-256."""
    if model_format == "torchscript":
        return write_torchscript(directory, hidden, seed)
    if model_format not in FORMATS:
        raise ValueError(f"unknown format {model_format!r}; use one of {', '.join(FORMATS)}")
    return write_pt2(directory, model_format, hidden, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="where to write the model directory")
    parser.add_argument("--format", choices=[*FORMATS, "all"], default="torchscript")
    parser.add_argument("--hidden", type=int, default=128, help="hidden layer width")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    args = parser.parse_args()
    if args.format == "all":
        for model_format in FORMATS:
            digest = write_example_model(
                args.directory / model_format, args.hidden, args.seed, model_format
            )
            print(f"{model_format} {digest}")
    else:
        print(write_example_model(args.directory, args.hidden, args.seed, args.format))


if __name__ == "__main__":
    main()

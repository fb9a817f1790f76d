"""Write Ferry's example model: a small MLP as TorchScript plus its model.json.

    python examples/make_example_model.py DIR [--hidden 128] [--seed 0]

INPUT__0 (FP32, 64 features per row) → OUTPUT__0 (FP32, 10 scores per row). Prints the
SHA-256 of DIR/model.pt (what ``spec.model.sha256`` / ``FERRY_RUNTIME_MODEL_SHA256`` expect).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import warnings
from pathlib import Path

import torch
from torch import nn

INPUT_FEATURES = 64
OUTPUT_FEATURES = 10


def build_mlp(hidden: int = 128, seed: int = 0) -> nn.Module:
    """The example MLP with deterministic weights."""
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


def write_example_model(directory: Path, hidden: int = 128, seed: int = 0) -> str:
    """Write model.pt and model.json into ``directory``; return model.pt's SHA-256."""
    directory.mkdir(parents=True, exist_ok=True)
    model_path = directory / "model.pt"
    with warnings.catch_warnings():
        # torch ≥ 2.10 deprecates torch.jit.*; TorchScript is still the format Ferry serves
        warnings.filterwarnings("ignore", r"`torch\.jit\.\w+` is deprecated", DeprecationWarning)
        scripted = torch.jit.script(build_mlp(hidden, seed))
        torch.jit.save(scripted, str(model_path))
    (directory / "model.json").write_text(json.dumps(model_json(), indent=2) + "\n")
    return hashlib.sha256(model_path.read_bytes()).hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("directory", type=Path, help="where to write model.pt and model.json")
    parser.add_argument("--hidden", type=int, default=128, help="hidden layer width")
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    args = parser.parse_args()
    print(write_example_model(args.directory, args.hidden, args.seed))


if __name__ == "__main__":
    main()

"""The models the suite serves: the example MLP (examples/make_example_model.py) in two
versions with different weights, as model directories and as the .tar.gz archives the model
store serves, and version 1 in each PyTorch 2 format (a torch.export program and an AOTInductor
package, same weights). Outputs are checked against the same model run locally with torch."""

from __future__ import annotations

import hashlib
import io
import subprocess
import sys
import tarfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
INPUT_NAME, OUTPUT_NAME = "INPUT__0", "OUTPUT__0"
INPUT_FEATURES = 64
TORCHSCRIPT = "torchscript"
PT2_FORMATS = ("exported-program", "aot-inductor")


@dataclass(frozen=True)
class ModelVersion:
    """One version of the example model, as a directory and as an archive."""

    version: str
    directory: Path
    archive: bytes
    sha256: str
    """SHA-256 of the served file, model.pt or model.pt2 (what spec.model.sha256 checks)."""
    format: str = TORCHSCRIPT
    """spec.model.format of this version: torchscript or one of PT2_FORMATS."""

    @property
    def served_file(self) -> str:
        return "model.pt" if self.format == TORCHSCRIPT else "model.pt2"

    @property
    def _suffix(self) -> str:
        return "" if self.format == TORCHSCRIPT else f"-{self.format}"

    @property
    def archive_key(self) -> str:
        """ConfigMap key of the archive (keys cannot hold '/')."""
        return f"mlp-v{self.version}{self._suffix}.tar.gz"

    @property
    def store_path(self) -> str:
        """Path of the archive on the model store."""
        return f"mlp/v{self.version}{self._suffix}/model.tar.gz"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        path = str(self.directory / self.served_file)
        with warnings.catch_warnings(), torch.inference_mode():
            if self.format == TORCHSCRIPT:
                warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated
                # torch.jit.load is not annotated in torch's stubs.
                model = torch.jit.load(path)  # type: ignore[no-untyped-call]
            elif self.format == "exported-program":
                model = torch.export.load(path).module()
            else:
                model = torch._inductor.aoti_load_package(path)
            result: np.ndarray = model(torch.from_numpy(batch)).numpy()
        return result


def make_version(
    workdir: Path, version: str, seed: int, model_format: str = TORCHSCRIPT
) -> ModelVersion:
    """Build the example model with ``seed`` in ``model_format`` into a directory of
    ``workdir``."""
    suffix = "" if model_format == TORCHSCRIPT else f"-{model_format}"
    directory = workdir / f"v{version}{suffix}"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "make_example_model.py"),
            str(directory),
            "--seed",
            str(seed),
            "--format",
            model_format,
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    buffer = io.BytesIO()
    served = "model.pt" if model_format == TORCHSCRIPT else "model.pt2"
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in (served, "model.json"):
            archive.add(directory / name, arcname=name)
    digest = hashlib.sha256((directory / served).read_bytes()).hexdigest()
    return ModelVersion(version, directory, buffer.getvalue(), digest, model_format)


def sample_batch(rows: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, INPUT_FEATURES), dtype=np.float32)

"""The models the suite serves: the example MLP (examples/make_example_model.py) in two
versions with different weights, as model directories and as the .tar.gz archives the model
store serves. Outputs are checked against the same model run locally with torch."""

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


@dataclass(frozen=True)
class ModelVersion:
    """One version of the example model, as a directory and as an archive."""

    version: str
    directory: Path
    archive: bytes
    sha256: str
    """SHA-256 of model.pt (what spec.model.sha256 checks)."""

    @property
    def archive_key(self) -> str:
        """ConfigMap key of the archive (keys cannot hold '/')."""
        return f"mlp-v{self.version}.tar.gz"

    @property
    def store_path(self) -> str:
        """Path of the archive on the model store."""
        return f"mlp/v{self.version}/model.tar.gz"

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated
            # torch.jit.load is not annotated in torch's stubs.
            model = torch.jit.load(str(self.directory / "model.pt"))  # type: ignore[no-untyped-call]
            result: np.ndarray = model(torch.from_numpy(batch)).numpy()
        return result


def make_version(workdir: Path, version: str, seed: int) -> ModelVersion:
    """Build the example model with ``seed`` into ``workdir/v<version>``."""
    directory = workdir / f"v{version}"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "examples" / "make_example_model.py"),
            str(directory),
            "--seed",
            str(seed),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in ("model.pt", "model.json"):
            archive.add(directory / name, arcname=name)
    digest = hashlib.sha256((directory / "model.pt").read_bytes()).hexdigest()
    return ModelVersion(version, directory, buffer.getvalue(), digest)


def sample_batch(rows: int = 4, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, INPUT_FEATURES), dtype=np.float32)

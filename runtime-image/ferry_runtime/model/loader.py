"""Load a model directory: detect the format, check the digest, pick the device, warm up."""

from __future__ import annotations

import logging
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ferry_runtime.cpus import detect_usable_cpus
from ferry_runtime.digest import digests_match, file_sha256
from ferry_runtime.model.base import Model, ModelLoadError
from ferry_runtime.model.config import load_model_config
from ferry_runtime.model.torchscript import TorchScriptModel
from ferry_runtime.protocol.datatypes import DATATYPES
from ferry_runtime.protocol.types import TensorSpec

log = logging.getLogger(__name__)

MODEL_FILE = "model.pt"
SUPPORTED_FORMATS = ("torchscript",)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What the loader needs from the runtime settings."""

    model_dir: Path
    model_format: str = "torchscript"
    sha256: str | None = None
    device: str = "auto"
    threads: int = 0


def detect_format(path: Path) -> str:
    """Tell a TorchScript archive from other files (a ``torch.save`` pickle, garbage)."""
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{path} is not a TorchScript archive (not a zip file); save the model with "
            "torch.jit.save(torch.jit.script(model), 'model.pt')"
        )
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
    if any("/code/" in name for name in names) or any(
        name.endswith("constants.pkl") for name in names
    ):
        return "torchscript"
    if any(name.endswith("data.pkl") for name in names):
        raise ModelLoadError(
            f"{path} is a torch.save checkpoint, not TorchScript; Ferry never unpickles "
            "arbitrary objects. Export it with torch.jit.save(torch.jit.script(model), ...)"
        )
    raise ModelLoadError(f"{path} is a zip archive but not a TorchScript model")


def resolve_device(requested: str) -> torch.device:
    """``auto`` → CUDA when available else CPU; ``cuda`` without CUDA is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ModelLoadError(
                "FERRY_RUNTIME_DEVICE=cuda but CUDA is not available to torch "
                f"(torch {torch.__version__}, built with CUDA {torch.version.cuda}); "
                "use a CUDA image and request a GPU, or set the device to auto/cpu"
            )
        return torch.device("cuda")
    if requested == "cpu":
        return torch.device("cpu")
    raise ModelLoadError(f"unknown device {requested!r}; use auto, cpu or cuda")


def load_model(options: LoadOptions) -> Model:
    """Load and validate the model in ``options.model_dir`` (blocking; call off the loop)."""
    if options.model_format not in SUPPORTED_FORMATS:
        raise ModelLoadError(
            f"model format {options.model_format!r} is not supported; supported: "
            + ", ".join(SUPPORTED_FORMATS)
        )
    model_dir = options.model_dir
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    config = load_model_config(model_dir)
    path = model_dir / MODEL_FILE
    if not path.is_file():
        raise ModelLoadError(f"{path} not found")
    detect_format(path)
    if options.sha256 is not None:
        actual = file_sha256(path)
        if not digests_match(options.sha256, actual):
            raise ModelLoadError(
                f"sha256 of {path} is {actual}, expected {options.sha256.lower()}; "
                "refusing to serve"
            )
    device = resolve_device(options.device)
    # 0 means "as many as this container may use", not torch's count of the node's cores.
    torch.set_num_threads(options.threads if options.threads > 0 else detect_usable_cpus())
    try:
        with warnings.catch_warnings():
            # torch ≥ 2.10 deprecates torch.jit.*; TorchScript stays the format Ferry serves
            warnings.filterwarnings(
                "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
            )
            # torch.jit.load is not annotated in torch's stubs.
            module = torch.jit.load(str(path), map_location=device)  # type: ignore[no-untyped-call]
    except Exception as error:  # torch raises RuntimeError and friends for bad archives
        raise ModelLoadError(f"torch.jit.load({path}) failed: {_first_line(error)}") from None
    module.eval()
    log.info(
        "loaded %s (torchscript) on %s with %d torch threads",
        path,
        device,
        torch.get_num_threads(),
    )
    return TorchScriptModel(
        module,
        tuple(spec.spec() for spec in config.inputs),
        tuple(spec.spec() for spec in config.outputs),
        device,
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def warmup_inputs(inputs: tuple[TensorSpec, ...], rows: int) -> list[np.ndarray]:
    """Zero-filled inputs of ``rows`` rows; variable dimensions take size 1."""
    return [
        np.zeros(
            (rows, *(1 if dim == -1 else dim for dim in spec.shape)),
            dtype=DATATYPES[spec.datatype].numpy,
        )
        for spec in inputs
    ]


def warm_up(model: Model, max_batch_size: int, runs: int = 2) -> None:
    """Run the model at the largest batch (and at one row) before it is marked ready.

    Raises ``ModelLoadError`` when the model fails or its outputs contradict ``model.json``,
    so a broken model never turns ready.
    """
    sizes = [max_batch_size] if max_batch_size == 1 else [max_batch_size, 1]
    with model.thread_context():
        for rows in sizes:
            batch = warmup_inputs(model.inputs, rows)
            for _ in range(runs):
                try:
                    model.forward(batch)
                except Exception as error:
                    raise ModelLoadError(
                        f"warm-up at batch size {rows} failed: {type(error).__name__}: {error}"
                    ) from None

"""Load a model directory: detect the format, check the digest, pick the device, warm up."""

from __future__ import annotations

import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ferry_runtime.cpus import detect_usable_cpus
from ferry_runtime.digest import digests_match, file_sha256
from ferry_runtime.model.base import Model, ModelLoadError
from ferry_runtime.model.config import CONFIG_FILE, load_model_config
from ferry_runtime.model.pt2 import Pt2Archive, inspect_pt2
from ferry_runtime.protocol.datatypes import DATATYPES
from ferry_runtime.protocol.types import TensorSpec

log = logging.getLogger(__name__)

TORCHSCRIPT_FILE = "model.pt"
PT2_FILE = "model.pt2"
MODEL_FILE = TORCHSCRIPT_FILE  # kept for callers that predate model.pt2
FORMATS = ("torchscript", "exported-program", "aot-inductor")
SUPPORTED_FORMATS = ("auto", *FORMATS)

Signature = tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """What the loader needs from the runtime settings."""

    model_dir: Path
    model_format: str = "auto"
    sha256: str | None = None
    device: str = "auto"
    threads: int = 0


@dataclass(frozen=True, slots=True)
class ModelFile:
    """The file a model directory serves and its format."""

    path: Path
    format: str
    archive: Pt2Archive | None = None


def locate_model(model_dir: Path, requested: str = "auto") -> ModelFile:
    """Find the served file (``model.pt`` or ``model.pt2``) and its format.

    ``requested`` is ``auto`` or one of :data:`FORMATS`; an explicit format that does not
    match the files is an error naming both.
    """
    if requested not in SUPPORTED_FORMATS:
        raise ModelLoadError(
            f"model format {requested!r} is not supported; supported: "
            + ", ".join(SUPPORTED_FORMATS)
        )
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    script, pt2 = model_dir / TORCHSCRIPT_FILE, model_dir / PT2_FILE
    if requested == "torchscript" or (requested == "auto" and not pt2.exists()):
        if not script.is_file():
            found = f"; it holds {PT2_FILE}: set the format to auto" if pt2.exists() else ""
            raise ModelLoadError(f"{script} not found{found}")
        detect_format(script)
        return ModelFile(script, "torchscript")
    if requested == "auto" and script.exists():
        raise ModelLoadError(
            f"{model_dir} holds both {TORCHSCRIPT_FILE} and {PT2_FILE}: set the model format "
            "(spec.model.format) to say which one to serve"
        )
    if not pt2.is_file():
        found = f"; it holds {TORCHSCRIPT_FILE}: set the format to torchscript or auto"
        raise ModelLoadError(
            f"{pt2} not found (format {requested}){found if script.exists() else ''}"
        )
    archive = inspect_pt2(pt2)
    if requested not in ("auto", archive.kind):
        what = "an AOTInductor package" if archive.kind == "aot-inductor" else "an exported program"
        raise ModelLoadError(
            f"the model format is {requested} but {pt2} is {what}: set the format to "
            f"{archive.kind} or auto"
        )
    return ModelFile(pt2, archive.kind, archive)


def detect_format(path: Path) -> str:
    """Tell a TorchScript archive from other files (a ``torch.save`` pickle, garbage)."""
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"{path} is not a TorchScript archive (not a zip file); save the model with "
            "torch.export (model.pt2, docs/contracts.md) or torch.jit.save (model.pt)"
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
            "arbitrary objects. Export it with torch.export (model.pt2, `ferry-runtime "
            "package`) or torch.jit.save"
        )
    if any(name.endswith("/archive_format") for name in names):
        raise ModelLoadError(f"{path} is a PT2 archive: name it {PT2_FILE}")
    raise ModelLoadError(f"{path} is a zip archive but not a TorchScript model")


def declared_signature(model_dir: Path) -> Signature | None:
    """The signature ``model.json`` declares, or ``None`` when the directory has none."""
    if not (model_dir / CONFIG_FILE).exists():
        return None
    config = load_model_config(model_dir)
    return (
        tuple(tensor.spec() for tensor in config.inputs),
        tuple(tensor.spec() for tensor in config.outputs),
    )


def model_signature_of(model_dir: Path, requested: str = "auto") -> Signature:
    """The served signature, known before the model is loaded for serving.

    ``model.json`` when present; otherwise (``model.pt2`` only) the exported program's
    signature or the one ``ferry-runtime package`` stored in an AOTInductor package.
    """
    declared = declared_signature(model_dir)
    if declared is not None:
        return declared
    located = locate_model(model_dir, requested)
    archive = located.archive
    if archive is None:  # TorchScript needs model.json: say so
        config = load_model_config(model_dir)
        return (
            tuple(tensor.spec() for tensor in config.inputs),
            tuple(tensor.spec() for tensor in config.outputs),
        )
    if archive.kind == "aot-inductor":
        from ferry_runtime.model.aoti import package_metadata, required_signature

        return required_signature(archive, package_metadata(archive))
    # The program is loaded again for serving; ferry-runtime package writes model.json, which
    # spares this first load.
    from ferry_runtime.model.exported import load_program, program_signature

    return program_signature(load_program(archive), located.path)


def resolve_device(requested: str, located: ModelFile | None = None) -> torch.device:
    """``auto`` → CUDA when available else CPU; ``cuda`` without CUDA is an error.

    An AOTInductor package is compiled for one device: with ``auto`` it picks that device
    (the package's device check then explains a CUDA package on a CPU-only pod).
    """
    if requested == "auto":
        if (
            located is not None
            and located.archive is not None
            and located.archive.kind == "aot-inductor"
        ):
            from ferry_runtime.model.aoti import package_device, package_metadata

            compiled_for = package_device(package_metadata(located.archive))
            if compiled_for == "cpu" or torch.cuda.is_available():
                return torch.device(compiled_for)
            # no CUDA here: load_aoti's device check says what to do
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
    model_dir = options.model_dir
    located = locate_model(model_dir, options.model_format)
    declared = declared_signature(model_dir)
    if declared is None and located.format == "torchscript":
        load_model_config(model_dir)  # raises: TorchScript needs model.json
    if options.sha256 is not None:
        actual = file_sha256(located.path)
        if not digests_match(options.sha256, actual):
            raise ModelLoadError(
                f"sha256 of {located.path} is {actual}, expected {options.sha256.lower()}; "
                "refusing to serve"
            )
    device = resolve_device(options.device, located)
    # 0 means "as many as this container may use", not torch's count of the node's cores.
    torch.set_num_threads(options.threads if options.threads > 0 else detect_usable_cpus())
    model = _load_format(located, declared, device)
    log.info(
        "loaded %s (%s) on %s with %d torch threads",
        located.path,
        located.format,
        device,
        torch.get_num_threads(),
    )
    return model


def _load_format(located: ModelFile, declared: Signature | None, device: torch.device) -> Model:
    if located.archive is None:
        from ferry_runtime.model.torchscript import load_torchscript

        assert declared is not None
        return load_torchscript(located.path, declared[0], declared[1], device)
    if located.archive.kind == "aot-inductor":
        from ferry_runtime.model.aoti import load_aoti

        return load_aoti(located.archive, declared, device)
    from ferry_runtime.model.exported import load_exported

    return load_exported(located.archive, declared, device)


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

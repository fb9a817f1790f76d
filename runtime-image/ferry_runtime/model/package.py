"""``ferry-runtime package``: an ``nn.Module`` factory → a servable model directory.

Imports the factory (``pkg.module:build`` or ``path/to/file.py:build``), exports the module
with a dynamic batch dimension, optionally compiles it with AOTInductor, checks the result
against eager on a random batch, and only then writes ``model.pt2`` and ``model.json`` (with a
rename, so a refused model leaves nothing behind). Returns the SHA-256 of ``model.pt2``.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast, get_args

import torch
from torch import nn

from ferry_runtime.digest import file_sha256
from ferry_runtime.model.config import CONFIG_FILE
from ferry_runtime.model.tensors import TORCH_DTYPES
from ferry_runtime.protocol.types import TensorSpec

PackageFormat = Literal["exported-program", "aot-inductor"]

PT2_FILE = "model.pt2"
CHECK_ROWS = 3
"""Rows of the random batch the package is checked with (not the export's example size)."""
EXAMPLE_ROWS = 2
"""Rows of the export's example batch (1 would specialise the batch dimension)."""


class PackageError(Exception):
    """The model cannot be packaged; the message says why and what to do."""


def package_format(name: str) -> PackageFormat:
    """``name`` as a format ``ferry-runtime package`` writes; PackageError for any other."""
    if name not in get_args(PackageFormat):
        known = " or ".join(get_args(PackageFormat))
        raise PackageError(f"cannot package as {name!r}: the package formats are {known}")
    return cast(PackageFormat, name)


@dataclass(frozen=True, slots=True)
class InputSpec:
    """``NAME:DATATYPE:SHAPE`` with the batch dimension first (``-1``)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @classmethod
    def parse(cls, text: str) -> InputSpec:
        """Parse ``x:FP32:-1,3,32,32``."""
        parts = text.split(":")
        if len(parts) != 3 or not parts[0]:
            raise PackageError(f"--input {text!r}: expected NAME:DATATYPE:SHAPE, e.g. x:FP32:-1,64")
        name, datatype, shape_text = parts
        if datatype not in TORCH_DTYPES:
            raise PackageError(
                f"--input {text!r}: datatype {datatype!r} is not one of {', '.join(TORCH_DTYPES)}"
            )
        try:
            shape = tuple(int(dim) for dim in shape_text.split(","))
        except ValueError:
            raise PackageError(f"--input {text!r}: the shape is comma-separated integers") from None
        if shape[0] != -1:
            raise PackageError(
                f"--input {text!r}: the first dimension is the batch and must be -1 (dynamic)"
            )
        if any(dim == 0 or dim < -1 for dim in shape):
            raise PackageError(f"--input {text!r}: dimensions are positive or -1")
        return cls(name, datatype, shape)


@dataclass(frozen=True, slots=True)
class PackageRequest:
    """Everything ``ferry-runtime package`` was asked to do."""

    factory: str
    inputs: tuple[InputSpec, ...]
    out: Path
    format: PackageFormat = "aot-inductor"
    outputs: tuple[str, ...] = ()
    device: str = "cpu"
    max_batch_size: int = 1024
    rtol: float = 1e-4
    atol: float = 1e-5


def load_factory(reference: str) -> Callable[[], nn.Module]:
    """Import ``pkg.module:attr`` or ``path/to/file.py:attr``."""
    target, _, attr = reference.rpartition(":")
    if not target or not attr:
        raise PackageError(f"{reference!r}: expected MODULE:FACTORY or FILE.py:FACTORY")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            spec = importlib.util.spec_from_file_location(f"_ferry_factory_{path.stem}", path)
            if spec is None or spec.loader is None or not path.is_file():
                raise PackageError(f"{reference!r}: {path} is not a Python file")
            module = importlib.util.module_from_spec(spec)
            sys.modules[spec.name] = module
            spec.loader.exec_module(module)
        else:
            if os.getcwd() not in sys.path:  # `python -m` semantics: the current directory
                sys.path.insert(0, os.getcwd())
            module = importlib.import_module(target)
    except PackageError:
        raise
    except Exception as error:
        raise PackageError(f"cannot import {target!r}: {type(error).__name__}: {error}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise PackageError(f"{reference!r}: {attr!r} is not a callable in {target!r}")
    # callable() checked it; that it returns an nn.Module is checked once it is called
    return cast(Callable[[], nn.Module], factory)


def random_batch(inputs: Sequence[InputSpec], rows: int, device: str) -> tuple[torch.Tensor, ...]:
    """A random batch; variable non-batch dimensions take size 3."""
    generator = torch.Generator().manual_seed(rows)
    tensors = []
    for spec in inputs:
        shape = (rows, *(3 if dim == -1 else dim for dim in spec.shape[1:]))
        dtype = TORCH_DTYPES[spec.datatype]
        if dtype.is_floating_point:
            tensor = torch.randn(shape, generator=generator).to(dtype)
        elif dtype == torch.bool:
            tensor = torch.randint(0, 2, shape, generator=generator).bool()
        else:
            tensor = torch.randint(0, 10, shape, generator=generator).to(dtype)
        tensors.append(tensor.to(device))
    return tuple(tensors)


def export(
    module: nn.Module, inputs: Sequence[InputSpec], max_batch_size: int, device: str
) -> torch.export.ExportedProgram:
    """``torch.export.export`` with a dynamic batch dimension shared by every input."""
    batch = torch.export.Dim("batch", min=1, max=max_batch_size)
    dynamic_shapes = tuple(
        {
            0: batch,
            **{
                axis: torch.export.Dim(f"{spec.name}_dim{axis}")
                for axis, dim in enumerate(spec.shape)
                if axis > 0 and dim == -1
            },
        }
        for spec in inputs
    )
    example = random_batch(inputs, EXAMPLE_ROWS, device)
    try:
        return torch.export.export(module, example, dynamic_shapes=dynamic_shapes)
    except Exception as error:
        raise PackageError(
            f"torch.export.export failed: {type(error).__name__}: {_clip(str(error))}"
        ) from None


def find_compiler() -> str | None:
    """The C++ compiler AOTInductor would use (``CXX``, else c++/g++/clang++ on PATH)."""
    for candidate in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if candidate and shutil.which(candidate):
            return candidate
    return None


@contextmanager
def _torch_internal_warnings() -> Iterator[None]:
    """Warnings torch raises from its own code while compiling, which no caller can act on:
    ``torch.utils.mkldnn`` still defines ``torch.jit.script_method`` classes (imported by
    Inductor) and Inductor pickles pytree ``LeafSpec`` objects with a deprecated check. Only
    these two are ignored; any other warning stays a warning (an error under the tests)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"`torch\.jit\.script_method` is deprecated",
            category=DeprecationWarning,
            module=r"torch\.jit\._script",
        )
        warnings.filterwarnings(
            "ignore",
            message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
            category=FutureWarning,
        )
        yield


def package_model(request: PackageRequest) -> str:
    """Do the whole job; return the SHA-256 of the written ``model.pt2``."""
    if request.format == "aot-inductor" and find_compiler() is None:
        raise PackageError(
            "AOTInductor packaging needs a C++ compiler and none was found (CXX, c++, g++, "
            "clang++ on PATH): install one (e.g. apt-get install g++) or package with "
            "--format exported-program, which needs none. Serving never needs a compiler"
        )
    if request.device == "cuda" and not torch.cuda.is_available():
        raise PackageError("--device cuda but CUDA is not available to torch here")
    module = load_factory(request.factory)()
    if not isinstance(module, nn.Module):
        raise PackageError(f"{request.factory} returned {type(module).__name__}, not nn.Module")
    module = module.eval().to(request.device)
    program = export(module, request.inputs, request.max_batch_size, request.device)
    from ferry_runtime.model.exported import program_signature, signature_from_specs

    inputs, outputs = program_signature(program, Path(request.factory))
    outputs = _rename_outputs(outputs, request.outputs)
    inputs = tuple(
        TensorSpec(spec.name, exported.datatype, exported.shape)
        for spec, exported in zip(request.inputs, inputs, strict=True)
    )
    config = {"inputs": signature_from_specs(inputs), "outputs": signature_from_specs(outputs)}
    request.out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ferry-package-", dir=request.out.parent))
    try:
        artifact = staging / PT2_FILE
        if request.format == "aot-inductor":
            _compile(program, artifact, config)
        else:
            torch.export.save(program, str(artifact))
        _check_against_eager(module, artifact, request)
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
        request.out.mkdir(parents=True, exist_ok=True)
        for name in (PT2_FILE, CONFIG_FILE):
            os.replace(staging / name, request.out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return file_sha256(request.out / PT2_FILE)


def _rename_outputs(
    outputs: tuple[TensorSpec, ...], names: tuple[str, ...]
) -> tuple[TensorSpec, ...]:
    if not names:
        return outputs
    if len(names) != len(outputs):
        raise PackageError(f"--output was given {len(names)} times; the model has {len(outputs)}")
    return tuple(
        TensorSpec(name, spec.datatype, spec.shape)
        for name, spec in zip(names, outputs, strict=True)
    )


def _compile(program: torch.export.ExportedProgram, artifact: Path, config: object) -> None:
    from ferry_runtime.model.aoti import SIGNATURE_KEY

    metadata = {SIGNATURE_KEY: json.dumps(config, separators=(",", ":"))}
    try:
        with _torch_internal_warnings():
            from torch._inductor import aoti_compile_and_package

            aoti_compile_and_package(
                program,
                package_path=str(artifact),
                inductor_configs={"aot_inductor.metadata": metadata},
            )
    except Exception as error:
        raise PackageError(
            f"AOTInductor compilation failed: {type(error).__name__}: {_clip(str(error))}"
        ) from None


def _check_against_eager(module: nn.Module, artifact: Path, request: PackageRequest) -> None:
    """Load the written artifact the way the runtime does and compare it with eager."""
    from ferry_runtime.model.loader import locate_model

    located = locate_model(artifact.parent, request.format)
    assert located.archive is not None
    batch = random_batch(request.inputs, CHECK_ROWS, request.device)
    with torch.inference_mode():
        expected = _as_tuple(module(*batch))
        if request.format == "aot-inductor":
            from torch._inductor import aoti_load_package

            got = _as_tuple(aoti_load_package(str(artifact))(*batch))
        else:
            from ferry_runtime.model.exported import load_program

            got = _as_tuple(load_program(located.archive).module()(*batch))
    if len(got) != len(expected):
        raise PackageError(f"the package returned {len(got)} outputs, eager {len(expected)}")
    for index, (ours, theirs) in enumerate(zip(got, expected, strict=True)):
        if ours.shape != theirs.shape or not torch.allclose(
            ours.float(), theirs.float(), rtol=request.rtol, atol=request.atol
        ):
            worst = (
                (ours.float() - theirs.float()).abs().max().item()
                if ours.shape == theirs.shape
                else float("nan")
            )
            raise PackageError(
                f"output {index} of the {request.format} package disagrees with eager on a "
                f"random batch of {CHECK_ROWS} (shapes {list(ours.shape)} vs "
                f"{list(theirs.shape)}, largest difference {worst:.3g}, rtol {request.rtol}, "
                f"atol {request.atol}); nothing was written"
            )


def _as_tuple(value: object) -> tuple[torch.Tensor, ...]:
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, (tuple, list)) and all(isinstance(item, torch.Tensor) for item in value):
        return tuple(value)
    raise PackageError(f"the model returned {type(value).__name__}; expected tensors")


def _clip(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."

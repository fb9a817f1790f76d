"""Safe unpacking of model archives (tar, tar.gz, zip) into an empty directory.

Member names are checked before anything is written: no absolute paths, no ``..``, no
devices or FIFOs, no member twice. Regular files are written first, under a running byte
and file-count budget that counts what is actually written (headers may lie); symbolic links
are created last and every one must resolve inside the directory, so nothing is ever written
through a link and no link leaves the model directory.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from ferry_runtime.fetch.errors import FetchError
from ferry_runtime.fetch.uri import ArchiveKind

_CHUNK = 1 << 20
_FILE_MODE = 0o644
_DIR_MODE = 0o755


@dataclass(frozen=True)
class FetchLimits:
    """Upper bounds that keep a hostile or broken source from filling the disk."""

    max_total_bytes: int = 64 << 30
    """Bytes of model files (downloaded or unpacked) one fetch may write."""
    max_files: int = 10_000
    """Files and directories one fetch may create."""


@dataclass
class ByteBudget:
    """Counts written bytes and created entries against ``FetchLimits``."""

    limits: FetchLimits
    bytes_used: int = 0
    entries_used: int = 0
    source: str = field(default="model source")

    def add_bytes(self, count: int) -> None:
        """Account for ``count`` more bytes; raise once the byte limit is exceeded."""
        self.bytes_used += count
        if self.bytes_used > self.limits.max_total_bytes:
            raise FetchError(
                f"{self.source} is larger than the limit of {self.limits.max_total_bytes} bytes"
            )

    def release_bytes(self, count: int) -> None:
        """Give back ``count`` bytes of a failed attempt that was discarded."""
        self.bytes_used -= count

    def add_entry(self) -> None:
        """Account for one more file or directory; raise once the count limit is exceeded."""
        self.entries_used += 1
        if self.entries_used > self.limits.max_files:
            raise FetchError(
                f"{self.source} has more than the limit of {self.limits.max_files} entries"
            )


def safe_member_path(name: str) -> PurePosixPath:
    """Return an archive member's relative path, or raise if it could escape the directory."""
    if "\x00" in name or "\\" in name:
        raise FetchError(f"archive member {name!r}: NUL or backslash in name")
    if name.startswith("/"):
        raise FetchError(f"archive member {name!r}: absolute path")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise FetchError(f"archive member {name!r}: '..' would escape the model directory")
    return PurePosixPath(*parts)


def copy_stream(source: IO[bytes], target: Path, budget: ByteBudget) -> None:
    """Copy ``source`` into a new file at ``target``, charging every byte to ``budget``."""
    with target.open("xb") as out:
        while chunk := source.read(_CHUNK):
            budget.add_bytes(len(chunk))
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    target.chmod(_FILE_MODE)


def extract_archive(archive: Path, kind: ArchiveKind, dest: Path, budget: ByteBudget) -> None:
    """Unpack ``archive`` into the empty directory ``dest`` under the rules above."""
    try:
        if kind is ArchiveKind.TAR:
            _extract_tar(archive, dest, budget)
        else:
            _extract_zip(archive, dest, budget)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise FetchError(f"{budget.source}: not a valid {kind.value} archive ({error})") from error


class _Unpacker:
    """Shared bookkeeping of one extraction: seen names, deferred links."""

    def __init__(self, dest: Path, budget: ByteBudget) -> None:
        self.dest = dest
        self.budget = budget
        self.files: set[PurePosixPath] = set()
        self.dirs: set[PurePosixPath] = set()
        self.symlinks: dict[PurePosixPath, str] = {}

    def _claim(self, rel: PurePosixPath, name: str) -> Path:
        if rel in self.files or rel in self.symlinks:
            raise FetchError(f"archive member {name!r} appears more than once")
        self.budget.add_entry()
        self.make_dir(rel.parent, name)
        return self.dest.joinpath(*rel.parts)

    def make_dir(self, rel: PurePosixPath, name: str) -> None:
        if rel in self.files:
            raise FetchError(f"archive member {name!r}: {rel} is both a file and a directory")
        if rel == PurePosixPath(".") or rel in self.dirs:
            return
        self.make_dir(rel.parent, name)
        self.dest.joinpath(*rel.parts).mkdir(mode=_DIR_MODE, exist_ok=True)
        self.dirs.add(rel)

    def write_file(self, rel: PurePosixPath, name: str, source: IO[bytes]) -> None:
        if rel == PurePosixPath(".") or rel in self.dirs:
            raise FetchError(f"archive member {name!r}: a file where a directory is")
        target = self._claim(rel, name)
        copy_stream(source, target, self.budget)
        self.files.add(rel)

    def copy_file(self, rel: PurePosixPath, name: str, existing: PurePosixPath) -> None:
        if existing not in self.files:
            raise FetchError(f"archive member {name!r}: hard link to a missing file {existing}")
        with self.dest.joinpath(*existing.parts).open("rb") as source:
            self.write_file(rel, name, source)

    def add_symlink(self, rel: PurePosixPath, name: str, target: str) -> None:
        if rel == PurePosixPath(".") or rel in self.dirs:
            raise FetchError(f"archive member {name!r}: a link where a directory is")
        if not target or target.startswith("/") or "\x00" in target:
            raise FetchError(f"archive member {name!r}: link to {target!r} is not relative")
        self._claim(rel, name)
        self.symlinks[rel] = target

    def finish(self) -> None:
        """Create the deferred symlinks, then check each one resolves inside ``dest``."""
        for rel, target in self.symlinks.items():
            if rel in self.dirs or rel in self.files:
                raise FetchError(f"archive member {rel}: a link where a file or directory is")
            os.symlink(target, self.dest.joinpath(*rel.parts))
        root = self.dest.resolve()
        for rel, target in self.symlinks.items():
            resolved = Path(os.path.realpath(self.dest.joinpath(*rel.parts)))
            if resolved != root and root not in resolved.parents:
                raise FetchError(
                    f"archive member {rel}: link to {target!r} leaves the model directory"
                )


def _extract_tar(archive: Path, dest: Path, budget: ByteBudget) -> None:
    unpacker = _Unpacker(dest, budget)
    with tarfile.open(archive, mode="r:*") as tar:
        for member in _iter_tar(tar):
            rel = safe_member_path(member.name)
            if member.isdir():
                budget.add_entry()
                unpacker.make_dir(rel, member.name)
            elif member.isreg():
                if member.size > budget.limits.max_total_bytes:
                    raise FetchError(
                        f"archive member {member.name!r} ({member.size} bytes) is larger than "
                        f"the limit of {budget.limits.max_total_bytes} bytes"
                    )
                source = tar.extractfile(member)
                if source is None:  # pragma: no cover - isreg() members always have data
                    raise FetchError(f"archive member {member.name!r} has no data")
                with source:
                    unpacker.write_file(rel, member.name, source)
            elif member.issym():
                unpacker.add_symlink(rel, member.name, member.linkname)
            elif member.islnk():
                unpacker.copy_file(rel, member.name, safe_member_path(member.linkname))
            else:
                raise FetchError(
                    f"archive member {member.name!r}: devices, FIFOs and other special "
                    "files are not allowed in a model archive"
                )
    unpacker.finish()


def _iter_tar(tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    member = tar.next()
    while member is not None:
        yield member
        member = tar.next()


def _extract_zip(archive: Path, dest: Path, budget: ByteBudget) -> None:
    unpacker = _Unpacker(dest, budget)
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            rel = safe_member_path(info.filename)
            mode = info.external_attr >> 16
            if info.is_dir():
                budget.add_entry()
                unpacker.make_dir(rel, info.filename)
            elif stat.S_ISLNK(mode):
                if info.file_size > 4096:
                    raise FetchError(f"archive member {info.filename!r}: link target too long")
                target = bundle.read(info).decode("utf-8", errors="strict")
                unpacker.add_symlink(rel, info.filename, target)
            elif stat.S_IFMT(mode) == 0 or stat.S_ISREG(mode):  # no type bits: a plain file
                with bundle.open(info) as source:
                    unpacker.write_file(rel, info.filename, source)
            else:
                raise FetchError(
                    f"archive member {info.filename!r}: only files, directories and links "
                    "inside the archive are allowed"
                )
    unpacker.finish()


def remove_tree(path: Path) -> None:
    """Remove ``path`` (file, link or directory) if it exists, never following links."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path)

"""Safe archive extraction: hostile members are refused before anything escapes DIR."""

from __future__ import annotations

import io
import stat
import tarfile
import zipfile
from pathlib import Path

import pytest
from ferry_runtime.fetch.archive import (
    ByteBudget,
    FetchLimits,
    extract_archive,
    safe_member_path,
)
from ferry_runtime.fetch.errors import FetchError
from ferry_runtime.fetch.uri import ArchiveKind
from fetch_fixtures import tar_member, tar_with

SYMLINK = tarfile.SYMTYPE
HARDLINK = tarfile.LNKTYPE
DIRECTORY = tarfile.DIRTYPE


def unpack_tar(tmp_path: Path, data: bytes, limits: FetchLimits | None = None) -> Path:
    archive = tmp_path / "model.tar.gz"
    archive.write_bytes(data)
    dest = tmp_path / "jail" / "tree"
    dest.mkdir(parents=True)
    extract_archive(archive, ArchiveKind.TAR, dest, ByteBudget(limits or FetchLimits()))
    return dest


def unpack_zip(tmp_path: Path, entries: list[tuple[zipfile.ZipInfo, bytes]]) -> Path:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for info, data in entries:
            bundle.writestr(info, data)
    archive = tmp_path / "model.zip"
    archive.write_bytes(buffer.getvalue())
    dest = tmp_path / "jail" / "tree"
    dest.mkdir(parents=True)
    extract_archive(archive, ArchiveKind.ZIP, dest, ByteBudget(FetchLimits()))
    return dest


def everything_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("model.pt", "model.pt"),
        ("./model/model.pt", "model/model.pt"),
        ("a//b/./c", "a/b/c"),
    ],
)
def test_safe_member_path_normalises(name: str, expected: str) -> None:
    assert safe_member_path(name).as_posix() == expected


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "a\\..\\x", "a\x00b"])
def test_safe_member_path_refuses_escapes(name: str) -> None:
    with pytest.raises(FetchError):
        safe_member_path(name)


def test_regular_tree_is_unpacked_with_sane_modes(tmp_path: Path) -> None:
    executable = tar_member("model/run.sh")
    executable.mode = 0o4777  # setuid, world-writable: not carried over
    dest = unpack_tar(
        tmp_path,
        tar_with(
            [
                (tar_member("model", DIRECTORY), None),
                (tar_member("model/model.json"), b"{}"),
                (executable, b"#!/bin/sh\n"),
            ]
        ),
    )
    assert everything_under(dest) == ["model", "model/model.json", "model/run.sh"]
    assert stat.S_IMODE((dest / "model/run.sh").stat().st_mode) == 0o644


@pytest.mark.parametrize(
    ("members", "message"),
    [
        ([(tar_member("../evil.txt"), b"x")], "escape"),
        ([(tar_member("ok/../../evil.txt"), b"x")], "escape"),
        ([(tar_member("/tmp/evil.txt"), b"x")], "absolute path"),
        ([(tar_member("link", SYMLINK, "/etc/passwd"), None)], "not relative"),
        ([(tar_member("link", SYMLINK, "../../etc"), None)], "leaves the model directory"),
        # Lexically inside, really outside: l -> ".", then m -> "l/.." is DIR's parent.
        (
            [(tar_member("l", SYMLINK, "."), None), (tar_member("m", SYMLINK, "l/.."), None)],
            "leaves the model directory",
        ),
        # A file written "through" a link is written to a real directory instead, and the
        # link then collides with it.
        (
            [(tar_member("d", SYMLINK, ".."), None), (tar_member("d/evil.txt"), b"x")],
            "a link where",
        ),
        ([(tar_member("hard", HARDLINK, "../outside"), None)], "escape"),
        ([(tar_member("hard", HARDLINK, "missing"), None)], "hard link to a missing file"),
        ([(tar_member("dev", tarfile.CHRTYPE), None)], "special files"),
        ([(tar_member("fifo", tarfile.FIFOTYPE), None)], "special files"),
        ([(tar_member("a"), b"1"), (tar_member("a"), b"2")], "more than once"),
        ([(tar_member("a"), b"1"), (tar_member("a/b"), b"2")], "both a file and a directory"),
    ],
)
def test_hostile_tar_members_are_refused(
    tmp_path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]], message: str
) -> None:
    with pytest.raises(FetchError, match=message):
        unpack_tar(tmp_path, tar_with(members))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jail", "model.tar.gz"]
    assert [p.name for p in (tmp_path / "jail").iterdir()] == ["tree"]


def test_links_inside_the_directory_are_kept(tmp_path: Path) -> None:
    dest = unpack_tar(
        tmp_path,
        tar_with(
            [
                (tar_member("weights/v1.pt"), b"weights"),
                (tar_member("model.pt", SYMLINK, "weights/v1.pt"), None),
                (tar_member("copy.pt", HARDLINK, "weights/v1.pt"), None),
            ]
        ),
    )
    assert (dest / "model.pt").is_symlink()
    assert (dest / "model.pt").read_bytes() == b"weights"
    assert not (dest / "copy.pt").is_symlink()
    assert (dest / "copy.pt").read_bytes() == b"weights"


def test_byte_limit_counts_what_is_written(tmp_path: Path) -> None:
    data = tar_with([(tar_member("a.bin"), b"x" * 600), (tar_member("b.bin"), b"y" * 600)])
    with pytest.raises(FetchError, match="larger than the limit of 1000 bytes"):
        unpack_tar(tmp_path, data, FetchLimits(max_total_bytes=1000))


def test_entry_limit(tmp_path: Path) -> None:
    data = tar_with([(tar_member(f"f{i}"), b"") for i in range(5)])
    with pytest.raises(FetchError, match="more than the limit of 4 entries"):
        unpack_tar(tmp_path, data, FetchLimits(max_files=4))


def test_highly_compressed_bomb_is_stopped_at_the_limit(tmp_path: Path) -> None:
    data = tar_with([(tar_member("zeros.bin"), bytes(8 << 20))])
    assert len(data) < 64 << 10
    with pytest.raises(FetchError, match="larger than the limit"):
        unpack_tar(tmp_path, data, FetchLimits(max_total_bytes=1 << 20))
    written = sum(p.stat().st_size for p in (tmp_path / "jail").rglob("*") if p.is_file())
    assert written <= 2 << 20


@pytest.mark.parametrize("data", [b"", b"not an archive at all", b"\x1f\x8b\x08\x00garbage"])
def test_corrupt_tar_is_a_clear_error(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(FetchError, match="not a valid tar archive"):
        unpack_tar(tmp_path, data)


def test_truncated_tar_gz_is_a_clear_error(tmp_path: Path) -> None:
    data = tar_with([(tar_member("model.pt"), bytes(range(256)) * 400)])
    with pytest.raises(FetchError, match="not a valid tar archive"):
        unpack_tar(tmp_path, data[: len(data) // 2])


def _zip_symlink(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def test_zip_is_unpacked(tmp_path: Path) -> None:
    dest = unpack_zip(
        tmp_path,
        [
            (zipfile.ZipInfo("model/"), b""),
            (zipfile.ZipInfo("model/model.json"), b"{}"),
            _zip_symlink("model/alias.json", "model.json"),
        ],
    )
    assert (dest / "model/model.json").read_bytes() == b"{}"
    assert (dest / "model/alias.json").read_bytes() == b"{}"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([(zipfile.ZipInfo("../evil.txt"), b"x")], "escape"),
        ([(zipfile.ZipInfo("/abs.txt"), b"x")], "absolute path"),
        ([_zip_symlink("link", "../../etc/passwd")], "leaves the model directory"),
    ],
)
def test_hostile_zip_members_are_refused(
    tmp_path: Path, entries: list[tuple[zipfile.ZipInfo, bytes]], message: str
) -> None:
    with pytest.raises(FetchError, match=message):
        unpack_zip(tmp_path, entries)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jail", "model.zip"]

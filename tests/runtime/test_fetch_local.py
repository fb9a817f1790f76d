"""file:// fetches and the placement rules: staging, marker last, never touching foreign files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from ferry_runtime.digest import file_sha256
from ferry_runtime.fetch import FetchError, fetch_model
from fetch_fixtures import assert_not_complete, make_model_dir, tar_gz_bytes, zip_bytes


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = make_model_dir(tmp_path_factory.mktemp("local") / "model")
    (source / "assets").mkdir()
    (source / "assets" / "labels.txt").write_text("cat\n")
    return source


def test_copies_a_local_directory(model_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    digest = file_sha256(model_dir / "model.pt")
    fetch_model(f"file://{model_dir}", dest, sha256=digest)
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*")) == [
        ".ferry-complete",
        "assets",
        "assets/labels.txt",
        "model.json",
        "model.pt",
    ]
    assert file_sha256(dest / "model.pt") == digest
    marker = json.loads((dest / ".ferry-complete").read_text())
    assert marker["source"] == f"file://{model_dir}"
    assert len(marker["source_id"]) == 64


@pytest.mark.parametrize("suffix", [".tar.gz", ".zip"])
def test_unpacks_a_local_archive(model_dir: Path, tmp_path: Path, suffix: str) -> None:
    archive = tmp_path / f"model{suffix}"
    archive.write_bytes(tar_gz_bytes(model_dir) if suffix == ".tar.gz" else zip_bytes(model_dir))
    fetch_model(f"file://{archive}", tmp_path / "out")
    assert (tmp_path / "out" / "model.pt").read_bytes() == (model_dir / "model.pt").read_bytes()


def test_links_in_the_source_are_copied_as_files(model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "linked"
    source.mkdir()
    (source / "model.pt").symlink_to(model_dir / "model.pt")
    (source / "model.json").symlink_to(model_dir / "model.json")
    fetch_model(f"file://{source}", tmp_path / "out")
    assert not (tmp_path / "out" / "model.pt").is_symlink()
    assert (tmp_path / "out" / "model.pt").read_bytes() == (model_dir / "model.pt").read_bytes()


def test_directory_link_loop_is_refused(model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "loop"
    source.mkdir()
    (source / "model.json").write_text("{}")
    (source / "again").symlink_to(source)
    with pytest.raises(FetchError, match="link loop"):
        fetch_model(f"file://{source}", tmp_path / "out")
    assert_not_complete(tmp_path / "out")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"model.pt": b"x"}, r"no model\.json or model\.pt2 found"),
        ({"model.json": b"{}"}, r"no model\.pt2 or model\.pt beside model\.json"),
        ({"model.json": b"[1]", "model.pt": b"x"}, "must hold a JSON object"),
        ({"model.json": b"{oops", "model.pt": b"x"}, "is not valid JSON"),
    ],
)
def test_incomplete_model_directories_are_refused(
    tmp_path: Path, files: dict[str, bytes], message: str
) -> None:
    source = tmp_path / "src"
    source.mkdir()
    for name, data in files.items():
        (source / name).write_bytes(data)
    with pytest.raises(FetchError, match=message):
        fetch_model(f"file://{source}", tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="no such file or directory"):
        fetch_model(f"file://{tmp_path}/nope", tmp_path / "out")
    with pytest.raises(FetchError, match="no such archive"):
        fetch_model(f"file://{tmp_path}/nope.tgz", tmp_path / "out")


def test_destination_inside_the_source_is_refused(model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    with pytest.raises(FetchError, match="inside the source"):
        fetch_model(f"file://{source}", source / "out")


def test_foreign_files_in_dest_are_never_touched(model_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    (dest / "lost+found").mkdir()
    with pytest.raises(FetchError, match=r"not empty and was not written by .*notes\.txt"):
        fetch_model(f"file://{model_dir}", dest)
    assert (dest / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in dest.iterdir()) == ["lost+found", "notes.txt"]


def test_leftovers_of_an_interrupted_run_are_cleaned(model_dir: Path, tmp_path: Path) -> None:
    """A run killed mid-install left a journal, half-moved entries and its staging dir."""
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / ".ferry-staging-abc123" / "tree").mkdir(parents=True)
    (dest / ".ferry-staging-abc123" / "tree" / "model.pt").write_bytes(b"partial")
    (dest / ".ferry-tmp-xyz").write_text("half a marker")
    (dest / ".ferry-incomplete").write_text(json.dumps({"entries": ["model.pt", "old.bin"]}))
    (dest / "model.pt").write_bytes(b"half")
    (dest / "old.bin").write_bytes(b"old")
    fetch_model(f"file://{model_dir}", dest)
    assert sorted(p.name for p in dest.iterdir()) == [
        ".ferry-complete",
        "assets",
        "model.json",
        "model.pt",
    ]
    assert (dest / "model.pt").read_bytes() == (model_dir / "model.pt").read_bytes()


def test_refetch_replaces_what_the_previous_fetch_installed(tmp_path: Path) -> None:
    first = tmp_path / "v1"
    first.mkdir()
    (first / "model.json").write_text("{}")
    (first / "model.pt").write_bytes(b"v1")
    (first / "v1-only.txt").write_text("old")
    second = tmp_path / "v2"
    second.mkdir()
    (second / "model.json").write_text("{}")
    (second / "model.pt").write_bytes(b"v2")
    dest = tmp_path / "out"
    fetch_model(f"file://{first}", dest)
    fetch_model(f"file://{second}", dest)
    assert sorted(p.name for p in dest.iterdir()) == [".ferry-complete", "model.json", "model.pt"]
    assert (dest / "model.pt").read_bytes() == b"v2"


def test_changed_model_file_is_fetched_again(model_dir: Path, tmp_path: Path) -> None:
    """A complete dir whose model.pt no longer matches the digest is not trusted."""
    dest = tmp_path / "out"
    digest = file_sha256(model_dir / "model.pt")
    fetch_model(f"file://{model_dir}", dest, sha256=digest)
    (dest / "model.pt").write_bytes(b"tampered")
    fetch_model(f"file://{model_dir}", dest, sha256=digest)
    assert file_sha256(dest / "model.pt") == digest


def test_a_complete_dir_from_another_uri_is_fetched_again(model_dir: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    fetch_model(f"file://{model_dir}", dest)
    other = tmp_path / "other"
    other.mkdir()
    (other / "model.json").write_text('{"other": true}')
    (other / "model.pt").write_bytes(b"other")
    fetch_model(f"file://{other}", dest)
    assert json.loads((dest / "model.json").read_text()) == {"other": True}


def test_unreadable_destination_parent_is_a_clear_error(model_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a dir")
    with pytest.raises(FetchError, match="cannot create the model directory"):
        fetch_model(f"file://{model_dir}", blocker / "out")


def test_relative_destination_is_resolved(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert fetch_model(f"file://{model_dir}", Path("rel")) == tmp_path / "rel"
    assert os.path.isfile(tmp_path / "rel" / ".ferry-complete")


def test_write_errors_become_fetch_errors(
    model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk full while copying: a FetchError (the CLI prints it), and nothing complete."""
    from ferry_runtime.fetch import archive

    def disk_full(*_: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(archive, "copy_stream", disk_full)
    monkeypatch.setattr("ferry_runtime.fetch.local.copy_stream", disk_full)
    dest = tmp_path / "out"
    with pytest.raises(FetchError, match="No space left on device"):
        fetch_model(f"file://{model_dir}", dest)
    assert list(dest.iterdir()) == []

"""Atomic placement of a fetched model into DIR, and the completion marker.

DIR may be a mount point (an emptyDir), so it is never renamed itself. Files are fetched into
``DIR/.ferry-staging-*``, verified, then renamed entry by entry into DIR. The marker
``.ferry-complete`` is written last (temp file + rename); before anything in DIR is replaced
the marker is removed and a journal (``.ferry-incomplete``) names every entry Ferry owns, so an
interrupted run never looks complete and the next run knows what it may delete. Names that
start with ``.ferry-`` are Ferry's; anything else in DIR that Ferry did not write is never
touched: the fetch stops and says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ferry_runtime.digest import digests_match, file_sha256
from ferry_runtime.fetch.archive import remove_tree
from ferry_runtime.fetch.errors import FetchError

MARKER = ".ferry-complete"
JOURNAL = ".ferry-incomplete"
STAGING_PREFIX = ".ferry-staging-"
RESERVED_PREFIX = ".ferry-"
MODEL_FILE = "model.pt"
PT2_FILE = "model.pt2"
CONFIG_FILE = "model.json"
_IGNORED = frozenset({"lost+found"})


def source_id(uri: str) -> str:
    """A stable identity of a URI that does not store its query (presigned secrets)."""
    return hashlib.sha256(uri.strip().encode()).hexdigest()


@dataclass(frozen=True)
class CompletionRecord:
    """What the marker says about a complete model directory."""

    source: str
    """The URI, with any query string removed (it may hold credentials)."""
    source_id: str
    """``source_id(uri)``: compared on re-runs."""
    sha256: str
    """Digest of the served file (``model.pt2``, else ``model.pt``) as installed."""
    entries: tuple[str, ...]
    """Top-level names in DIR that this fetch installed."""

    def to_json(self) -> str:
        """Serialise for the marker file."""
        return json.dumps(
            {
                "source": self.source,
                "source_id": self.source_id,
                "sha256": self.sha256,
                "entries": list(self.entries),
            },
            indent=2,
        )


def read_record(path: Path) -> CompletionRecord | None:
    """Read a marker; a missing or unreadable one means "not complete"."""
    try:
        data = json.loads(path.read_text())
        return CompletionRecord(
            source=str(data["source"]),
            source_id=str(data["source_id"]),
            sha256=str(data["sha256"]),
            entries=tuple(str(name) for name in data["entries"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _read_journal(dest: Path) -> set[str]:
    try:
        data = json.loads((dest / JOURNAL).read_text())
        return {str(name) for name in data["entries"]}
    except (OSError, ValueError, KeyError, TypeError):
        return set()


def is_complete(dest: Path, uri: str, expected_sha256: str | None) -> bool:
    """True when DIR already holds a complete fetch of ``uri`` (and the expected digest)."""
    record = read_record(dest / MARKER)
    if record is None or record.source_id != source_id(uri):
        return False
    if not all((dest / name).exists() for name in record.entries):
        return False
    if expected_sha256 is None:
        return True
    model = served_file(dest)
    return (
        digests_match(expected_sha256, record.sha256)
        and model.is_file()
        and digests_match(expected_sha256, file_sha256(model))
    )


def prepare_dest(dest: Path) -> set[str]:
    """Create DIR if needed, drop stale staging, return the entries Ferry owns there.

    Raises ``FetchError`` when DIR holds something Ferry did not write.
    """
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FetchError(f"cannot create the model directory {dest}: {error}") from error
    if not dest.is_dir():
        raise FetchError(f"{dest} exists and is not a directory")
    owned = _read_journal(dest)
    record = read_record(dest / MARKER)
    if record is not None:
        owned.update(record.entries)
    foreign: list[str] = []
    for child in dest.iterdir():
        name = child.name
        if name in (MARKER, JOURNAL):
            continue
        if name.startswith(RESERVED_PREFIX):
            remove_tree(child)  # staging or a temp file left by an interrupted run
        elif name not in owned and name not in _IGNORED:
            foreign.append(name)
    if foreign:
        shown = ", ".join(sorted(foreign)[:5])
        raise FetchError(
            f"{dest} is not empty and was not written by ferry-runtime fetch (found: {shown}); "
            "use an empty directory"
        )
    return owned


def invalidate(dest: Path, owned: set[str]) -> None:
    """Make DIR stop looking complete before it is fetched again; its entries stay owned."""
    if (dest / MARKER).exists() or owned:
        _write_atomic(dest, JOURNAL, json.dumps({"entries": sorted(owned)}))
    (dest / MARKER).unlink(missing_ok=True)
    _fsync_dir(dest)


def new_staging(dest: Path) -> Path:
    """Make a fresh staging directory inside DIR (same filesystem, so renames are atomic)."""
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=dest))


def served_file(root: Path) -> Path:
    """The file whose digest ``sha256`` names: ``model.pt2`` when present, else ``model.pt``."""
    return root / PT2_FILE if (root / PT2_FILE).exists() else root / MODEL_FILE


def _is_model_root(path: Path) -> bool:
    return any((path / name).exists() for name in (CONFIG_FILE, PT2_FILE))


def find_model_root(tree: Path, what: str) -> Path:
    """Return the directory holding the model: the tree itself or its single subdir."""
    if _is_model_root(tree):
        return tree
    children = [child for child in tree.iterdir() if not child.name.startswith(RESERVED_PREFIX)]
    if len(children) == 1 and children[0].is_dir() and not children[0].is_symlink():
        nested = children[0]
        if _is_model_root(nested):
            return nested
    shown = ", ".join(sorted(child.name for child in children)[:10]) or "nothing"
    raise FetchError(
        f"{what}: no {CONFIG_FILE} or {PT2_FILE} found (the top level holds: {shown}); a model "
        f"directory holds {PT2_FILE} (model.json optional) or {MODEL_FILE} and {CONFIG_FILE} "
        "(docs/contracts.md)"
    )


def check_model_files(root: Path, what: str) -> None:
    """Fail early when ``model.json`` is not a JSON object or the model file is missing."""
    if (root / CONFIG_FILE).exists():
        try:
            config = json.loads((root / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise FetchError(f"{what}: {CONFIG_FILE} is not valid JSON ({error})") from error
        if not isinstance(config, dict):
            raise FetchError(f"{what}: {CONFIG_FILE} must hold a JSON object")
    if not (root / PT2_FILE).is_file() and not (root / MODEL_FILE).is_file():
        raise FetchError(f"{what}: no {PT2_FILE} or {MODEL_FILE} beside {CONFIG_FILE}")


def install(dest: Path, root: Path, record: CompletionRecord, owned: set[str]) -> None:
    """Move the verified entries of ``root`` into DIR, replacing ``owned``; marker last."""
    _write_atomic(dest, JOURNAL, json.dumps({"entries": sorted(owned | set(record.entries))}))
    (dest / MARKER).unlink(missing_ok=True)
    _fsync_dir(dest)
    for name in sorted(owned | set(record.entries)):
        remove_tree(dest / name)
    for name in record.entries:
        os.replace(root / name, dest / name)
    _fsync_dir(dest)
    _write_atomic(dest, MARKER, record.to_json())
    (dest / JOURNAL).unlink()
    _fsync_dir(dest)


def model_entries(root: Path) -> tuple[str, ...]:
    """Top-level names of a model root to install (Ferry's own names are never copied)."""
    return tuple(
        sorted(child.name for child in root.iterdir() if not child.name.startswith(RESERVED_PREFIX))
    )


def _write_atomic(dest: Path, name: str, text: str) -> None:
    handle, temp = tempfile.mkstemp(prefix=f"{RESERVED_PREFIX}tmp-", dir=dest)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, dest / name)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _fsync_dir(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)

"""SHA-256 digests of model files, shared by the fetcher and the loader."""

from __future__ import annotations

import hashlib
from pathlib import Path

_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    """Return the lowercase hex SHA-256 of the file at ``path``, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def digests_match(expected: str, actual: str) -> bool:
    """Compare two hex digests case-insensitively."""
    return expected.strip().lower() == actual.strip().lower()

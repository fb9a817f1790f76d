"""Pure parsing of model URIs (docs/contracts.md) into typed sources."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import PurePosixPath
from urllib.parse import unquote, urlsplit

from ferry_runtime.fetch.errors import FetchError


class ArchiveKind(Enum):
    """Archive formats a model directory may be packed in."""

    TAR = "tar"
    ZIP = "zip"


_ARCHIVE_SUFFIXES: tuple[tuple[str, ArchiveKind], ...] = (
    (".tar.gz", ArchiveKind.TAR),
    (".tgz", ArchiveKind.TAR),
    (".tar", ArchiveKind.TAR),
    (".zip", ArchiveKind.ZIP),
)
ARCHIVE_SUFFIXES = tuple(suffix for suffix, _ in _ARCHIVE_SUFFIXES)
DIRECTORY_URL_FILES = ("model.pt", "model.json")


@dataclass(frozen=True)
class LocalDirectory:
    """``file:///abs/dir``: a model directory on this machine, copied."""

    path: PurePosixPath


@dataclass(frozen=True)
class LocalArchive:
    """``file:///abs/model.tar.gz``: an archive on this machine, unpacked."""

    path: PurePosixPath
    kind: ArchiveKind


@dataclass(frozen=True)
class HttpArchive:
    """``http(s)://host/path/model.tar.gz``: an archive, downloaded then unpacked."""

    url: str
    kind: ArchiveKind


@dataclass(frozen=True)
class HttpDirectory:
    """``http(s)://host/path/``: ``model.pt`` and ``model.json`` fetched from the URL."""

    base_url: str

    def file_urls(self) -> dict[str, str]:
        """Return the URL of each file of the model directory, by file name."""
        return {name: self.base_url + name for name in DIRECTORY_URL_FILES}


@dataclass(frozen=True)
class S3Prefix:
    """``s3://BUCKET/PREFIX/``: every object under the prefix."""

    bucket: str
    prefix: str


@dataclass(frozen=True)
class S3Archive:
    """``s3://BUCKET/KEY.tar.gz``: one archive object, downloaded then unpacked."""

    bucket: str
    key: str
    kind: ArchiveKind


ModelSource = LocalDirectory | LocalArchive | HttpArchive | HttpDirectory | S3Prefix | S3Archive

_SUPPORTED = (
    "file:///abs/path, http(s)://host/path/ or .../model.tar.gz|.tgz|.zip, s3://bucket/prefix/"
)


def archive_kind(path: str) -> ArchiveKind | None:
    """Return the archive kind a path's suffix names, or ``None`` for a non-archive."""
    lowered = path.lower()
    for suffix, kind in _ARCHIVE_SUFFIXES:
        if lowered.endswith(suffix):
            return kind
    return None


def parse_model_uri(uri: str) -> ModelSource:
    """Parse a model URI into its source, or raise ``FetchError`` saying what is accepted."""
    text = uri.strip()
    if not text:
        raise FetchError(f"empty model URI; expected one of: {_SUPPORTED}")
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _parse_file(text, parts.netloc, parts.path)
    if scheme in ("http", "https"):
        return _parse_http(text, parts.netloc, parts.path)
    if scheme == "s3":
        return _parse_s3(text, parts.netloc, parts.path)
    if scheme == "pvc":
        raise FetchError(
            f"{text!r}: pvc:// models are mounted into the pod by the operator, not fetched; "
            "serve the mounted directory with FERRY_RUNTIME_MODEL_DIR instead"
        )
    if not scheme:
        hint = f" (for a local path use file://{text})" if text.startswith("/") else ""
        raise FetchError(f"{text!r} has no URI scheme{hint}; expected one of: {_SUPPORTED}")
    raise FetchError(
        f"unsupported URI scheme {scheme!r} in {text!r}; expected one of: {_SUPPORTED}"
    )


def _parse_file(uri: str, netloc: str, path: str) -> ModelSource:
    if netloc not in ("", "localhost"):
        raise FetchError(f"{uri!r}: file URIs must be local (file:///abs/path), not on {netloc!r}")
    local = PurePosixPath(unquote(path))
    if not local.is_absolute() or str(local) == "/":
        raise FetchError(f"{uri!r}: expected an absolute path below / (file:///abs/path)")
    kind = archive_kind(local.name)
    if kind is not None:
        return LocalArchive(path=local, kind=kind)
    return LocalDirectory(path=local)


def _parse_http(uri: str, netloc: str, path: str) -> ModelSource:
    if not netloc:
        raise FetchError(f"{uri!r}: missing host")
    if path.endswith("/"):
        base = uri.split("?", 1)[0].split("#", 1)[0]
        if "?" in uri:
            raise FetchError(f"{uri!r}: a directory URL cannot carry a query string")
        return HttpDirectory(base_url=base)
    kind = archive_kind(path)
    if kind is None:
        raise FetchError(
            f"{uri!r}: an http(s) model URI must end with '/' (a directory holding "
            f"model.pt and model.json) or name an archive ({', '.join(ARCHIVE_SUFFIXES)})"
        )
    return HttpArchive(url=uri.split("#", 1)[0], kind=kind)


def _parse_s3(uri: str, bucket: str, path: str) -> ModelSource:
    if not bucket:
        raise FetchError(f"{uri!r}: missing bucket (s3://BUCKET/PREFIX/)")
    key = unquote(path).lstrip("/")
    kind = archive_kind(key)
    if kind is not None:
        return S3Archive(bucket=bucket, key=key, kind=kind)
    if key and not key.endswith("/"):
        # A prefix names a "directory": without the slash, s3://b/m would also match m2/...
        key += "/"
    return S3Prefix(bucket=bucket, prefix=key)

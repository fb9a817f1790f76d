"""``fetch_model``: a model URI into a complete, verified model directory."""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

from ferry_runtime.digest import digests_match, file_sha256
from ferry_runtime.fetch import placement
from ferry_runtime.fetch.archive import ByteBudget, FetchLimits, extract_archive, remove_tree
from ferry_runtime.fetch.errors import FetchError
from ferry_runtime.fetch.retry import RetryPolicy
from ferry_runtime.fetch.uri import (
    HttpArchive,
    HttpDirectory,
    LocalArchive,
    LocalDirectory,
    ModelSource,
    S3Archive,
    S3Prefix,
    parse_model_uri,
)

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"[0-9a-f]{64}")


class FetchInterruptedError(FetchError):
    """SIGTERM arrived while fetching; nothing was left looking complete."""


def normalize_sha256(value: str | None) -> str | None:
    """Lowercase hex digest (an optional ``sha256:`` prefix is accepted), or ``None``."""
    if value is None or not value.strip():
        return None
    digest = value.strip().lower().removeprefix("sha256:")
    if not _SHA256.fullmatch(digest):
        raise FetchError(f"sha256 {value!r} is not 64 hexadecimal characters")
    return digest


def display_uri(uri: str) -> str:
    """The URI without query string or credentials, for messages and the marker."""
    from ferry_runtime.fetch.http import redact_url

    return redact_url(uri.strip()) if "://" in uri else uri.strip()


def fetch_model(
    uri: str,
    dest: Path,
    *,
    sha256: str | None = None,
    limits: FetchLimits | None = None,
    retry: RetryPolicy | None = None,
) -> Path:
    """Fetch the model at ``uri`` into ``dest`` and return ``dest``.

    ``sha256`` is the expected digest of the served file (``model.pt2``, else ``model.pt``).
    A re-run over a directory that a previous fetch of the same URI (and digest) completed
    does nothing.
    Raises ``FetchError`` with a message for the user.
    """
    source = parse_model_uri(uri)
    expected = normalize_sha256(sha256)
    target = Path(dest).absolute()
    shown = display_uri(uri)
    with _sigterm_interrupts():
        try:
            _fetch_into(
                source,
                uri,
                target,
                expected=expected,
                limits=limits or FetchLimits(),
                retry=retry or RetryPolicy(),
            )
        except OSError as error:  # disk full, permissions, a file where a directory should be
            raise FetchError(f"{shown}: cannot write below {target}: {error}") from error
    return target


def _fetch_into(
    source: ModelSource,
    uri: str,
    target: Path,
    *,
    expected: str | None,
    limits: FetchLimits,
    retry: RetryPolicy,
) -> None:
    shown = display_uri(uri)
    if placement.is_complete(target, uri, expected):
        log.info("%s already holds %s; nothing to do", target, shown)
        return
    owned = placement.prepare_dest(target)
    placement.invalidate(target, owned)  # a failed re-fetch must not leave the old marker
    started = time.monotonic()
    staging = placement.new_staging(target)
    try:
        tree = staging / "tree"
        tree.mkdir()
        _materialize(source, staging, tree, ByteBudget(limits, source=shown), retry)
        root = placement.find_model_root(tree, shown)
        placement.check_model_files(root, shown)
        served = placement.served_file(root)
        actual = file_sha256(served)
        if expected is not None and not digests_match(expected, actual):
            raise FetchError(
                f"sha256 mismatch for {served.name} from {shown}: expected "
                f"{expected}, got {actual}; nothing was installed"
            )
        record = placement.CompletionRecord(
            source=shown,
            source_id=placement.source_id(uri),
            sha256=actual,
            entries=placement.model_entries(root),
        )
        placement.install(target, root, record, owned)
    finally:
        remove_tree(staging)
    log.info(
        "fetched %s into %s in %.1fs (sha256 of the model file %s)",
        shown,
        target,
        time.monotonic() - started,
        actual,
    )


def _materialize(
    source: ModelSource,
    staging: Path,
    tree: Path,
    budget: ByteBudget,
    retry: RetryPolicy,
) -> None:
    """Write the source's model files under ``tree`` (archives are unpacked there)."""
    if isinstance(source, LocalDirectory):
        from ferry_runtime.fetch.local import copy_local_directory

        copy_local_directory(Path(source.path), tree, budget)
    elif isinstance(source, LocalArchive):
        archive = Path(source.path)
        if not archive.is_file():
            raise FetchError(f"file://{archive}: no such archive")
        extract_archive(archive, source.kind, tree, budget)
    elif isinstance(source, HttpArchive | HttpDirectory):
        _fetch_http(source, staging, tree, budget, retry)
    else:
        _fetch_s3(source, staging, tree, budget, retry)


def _fetch_http(
    source: HttpArchive | HttpDirectory,
    staging: Path,
    tree: Path,
    budget: ByteBudget,
    retry: RetryPolicy,
) -> None:
    from ferry_runtime.fetch import http

    with http.make_client(os.environ.get(http.AUTHORIZATION_ENV) or None) as client:
        if isinstance(source, HttpDirectory):
            for name, url in source.file_urls().items():
                budget.add_entry()
                http.download(client, url, tree / name, budget=budget, policy=retry)
            return
        archive = staging / "download"
        http.download(client, source.url, archive, budget=budget, policy=retry)
    budget.release_bytes(archive.stat().st_size)  # the archive itself is not part of the model
    extract_archive(archive, source.kind, tree, budget)
    archive.unlink()


def _fetch_s3(
    source: S3Prefix | S3Archive,
    staging: Path,
    tree: Path,
    budget: ByteBudget,
    retry: RetryPolicy,
) -> None:
    from ferry_runtime.fetch import s3

    client = s3.make_client(retry)
    if isinstance(source, S3Prefix):
        s3.download_prefix(client, source.bucket, source.prefix, tree, budget=budget)
        return
    archive = staging / "download"
    s3.download_object(client, source.bucket, source.key, archive, budget=budget)
    budget.release_bytes(archive.stat().st_size)
    extract_archive(archive, source.kind, tree, budget)
    archive.unlink()


@contextmanager
def _sigterm_interrupts() -> Iterator[None]:
    """Make SIGTERM raise ``FetchInterruptedError`` (so staging is cleaned) while fetching.

    Only in the main thread and only where SIGTERM still has its default action; the
    previous handler is restored afterwards. As PID 1 in a container, a default SIGTERM
    would otherwise be ignored by the kernel.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise FetchInterruptedError("interrupted by SIGTERM; the model directory is not complete")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

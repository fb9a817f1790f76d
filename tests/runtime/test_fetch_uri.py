"""Pure parts of fetch: URI parsing, digest normalisation, retry policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import PurePosixPath

import pytest
from ferry_runtime.fetch.core import normalize_sha256
from ferry_runtime.fetch.errors import FetchError
from ferry_runtime.fetch.http import redact_url
from ferry_runtime.fetch.retry import RetryPolicy, TransientError, with_retries
from ferry_runtime.fetch.uri import (
    ArchiveKind,
    HttpArchive,
    HttpDirectory,
    LocalArchive,
    LocalDirectory,
    ModelSource,
    S3Archive,
    S3Prefix,
    parse_model_uri,
)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("file:///models/resnet", LocalDirectory(PurePosixPath("/models/resnet"))),
        ("file:///models/resnet/", LocalDirectory(PurePosixPath("/models/resnet"))),
        ("file://localhost/m%20x", LocalDirectory(PurePosixPath("/m x"))),
        ("file:///a/m.tar.gz", LocalArchive(PurePosixPath("/a/m.tar.gz"), ArchiveKind.TAR)),
        ("https://h/m/", HttpDirectory("https://h/m/")),
        ("http://h:8000/a/b/", HttpDirectory("http://h:8000/a/b/")),
        ("https://h/m.tar.gz", HttpArchive("https://h/m.tar.gz", ArchiveKind.TAR)),
        ("https://h/m.TGZ", HttpArchive("https://h/m.TGZ", ArchiveKind.TAR)),
        ("http://h/m.zip?sig=1#frag", HttpArchive("http://h/m.zip?sig=1", ArchiveKind.ZIP)),
        ("s3://bucket/models/resnet/", S3Prefix("bucket", "models/resnet/")),
        ("s3://bucket/models/resnet", S3Prefix("bucket", "models/resnet/")),
        ("s3://bucket", S3Prefix("bucket", "")),
        ("s3://bucket/", S3Prefix("bucket", "")),
        ("s3://bucket/a/m.tgz", S3Archive("bucket", "a/m.tgz", ArchiveKind.TAR)),
        ("s3://bucket/a/m.zip", S3Archive("bucket", "a/m.zip", ArchiveKind.ZIP)),
        ("  s3://bucket/x/  ", S3Prefix("bucket", "x/")),
    ],
)
def test_parse_model_uri(uri: str, expected: ModelSource) -> None:
    assert parse_model_uri(uri) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "empty model URI"),
        ("ftp://h/m.tar.gz", "unsupported URI scheme 'ftp'"),
        ("gs://bucket/model/", "unsupported URI scheme 'gs'"),
        ("pvc://claim/path", "mounted into the pod by the operator"),
        ("/models/resnet", r"no URI scheme \(for a local path use file:///models/resnet\)"),
        ("models/resnet", "no URI scheme"),
        ("file://server/share/m", "must be local"),
        ("file:///", "absolute path below /"),
        ("https://h/model.pt", "must end with '/'"),
        ("https:///m/", "missing host"),
        ("https://h/m/?token=1", "cannot carry a query string"),
        ("s3:///key/", "missing bucket"),
    ],
)
def test_parse_model_uri_errors(uri: str, message: str) -> None:
    with pytest.raises(FetchError, match=message):
        parse_model_uri(uri)


def test_directory_url_names_the_two_model_files() -> None:
    source = parse_model_uri("https://h/m/")
    assert isinstance(source, HttpDirectory)
    assert source.file_urls() == {
        "model.pt": "https://h/m/model.pt",
        "model.json": "https://h/m/model.json",
    }


def test_redact_url_drops_secrets() -> None:
    assert redact_url("https://user:pw@h:8443/m.tgz?X-Amz-Signature=s#f") == "https://h:8443/m.tgz"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("AB" * 32, "ab" * 32),
        ("sha256:" + "0f" * 32, "0f" * 32),
    ],
)
def test_normalize_sha256(value: str | None, expected: str | None) -> None:
    assert normalize_sha256(value) == expected


@pytest.mark.parametrize("value", ["abc", "g" * 64, "a" * 63, "a" * 65])
def test_normalize_sha256_refuses_non_digests(value: str) -> None:
    with pytest.raises(FetchError, match="not 64 hexadecimal"):
        normalize_sha256(value)


def test_retries_are_bounded_with_growing_backoff() -> None:
    calls: list[int] = []
    pauses: list[float] = []

    def always_fails() -> None:
        calls.append(1)
        raise TransientError("connection reset")

    policy = RetryPolicy(attempts=4, base_delay_s=1.0, max_delay_s=3.0)
    with pytest.raises(TransientError):
        with_retries(always_fails, policy, what="GET x", sleep=pauses.append)
    assert len(calls) == 4
    assert len(pauses) == 3
    assert [policy.delay_before(n) for n in (2, 3, 4, 5)] == [1.0, 2.0, 3.0, 3.0]
    assert all(0 <= pause <= cap for pause, cap in zip(pauses, (1.0, 2.0, 3.0), strict=True))


def test_non_transient_errors_are_not_retried() -> None:
    calls: list[int] = []

    def denied() -> None:
        calls.append(1)
        raise FetchError("HTTP 403")

    with pytest.raises(FetchError):
        with_retries(denied, RetryPolicy(attempts=5), what="GET x", sleep=lambda _: None)
    assert len(calls) == 1


def test_retry_returns_the_first_success() -> None:
    outcomes: Iterator[Exception | str] = iter([TransientError("reset"), "ok"])

    def flaky() -> str:
        outcome = next(outcomes)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    assert with_retries(flaky, RetryPolicy(attempts=2), what="x", sleep=lambda _: None) == "ok"

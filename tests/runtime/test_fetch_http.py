"""ferry-runtime fetch over http(s): a real loopback HTTP server, real TorchScript files."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from ferry_runtime.digest import file_sha256
from ferry_runtime.fetch import FetchError, RetryPolicy, fetch_model
from fetch_fixtures import (
    ModelHttpServer,
    assert_not_complete,
    make_model_dir,
    serve_http,
    tar_gz_bytes,
    tar_member,
    tar_with,
    torchscript_allowed,
    zip_bytes,
)

FAST_RETRY = RetryPolicy(attempts=3, base_delay_s=0.01, max_delay_s=0.05)
TOKEN = "Bearer s3cr3t-token"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_model_dir(tmp_path_factory.mktemp("source") / "model")


@pytest.fixture(scope="module")
def digest(model_dir: Path) -> str:
    return file_sha256(model_dir / "model.pt")


@pytest.fixture
def server(model_dir: Path) -> Iterator[ModelHttpServer]:
    files = {
        "/models/resnet.tar.gz": tar_gz_bytes(model_dir),
        "/models/nested.tgz": tar_gz_bytes(model_dir, top_level="resnet"),
        "/models/resnet.zip": zip_bytes(model_dir),
        "/models/dir/model.pt": (model_dir / "model.pt").read_bytes(),
        "/models/dir/model.json": (model_dir / "model.json").read_bytes(),
        "/models/nojson.tar.gz": tar_with([(tar_member("model.pt"), b"not a model")]),
        "/models/evil.tar.gz": tar_with(
            [(tar_member("model.json"), b"{}"), (tar_member("../evil.txt"), b"pwned")]
        ),
    }
    with serve_http(ModelHttpServer(files=files)) as running:
        yield running


def assert_same_model(fetched: Path, original: Path) -> None:
    """The fetched model.pt loads with torch.jit.load and computes what the original does."""
    import torch

    sample = torch.arange(8, dtype=torch.float32).reshape(2, 4)
    with torchscript_allowed():
        expected = torch.jit.load(str(original / "model.pt"))(sample)
        actual = torch.jit.load(str(fetched / "model.pt"))(sample)
    assert torch.equal(actual, expected)
    assert json.loads((fetched / "model.json").read_text()) == json.loads(
        (original / "model.json").read_text()
    )


@pytest.mark.parametrize(
    "path", ["/models/resnet.tar.gz", "/models/nested.tgz", "/models/resnet.zip", "/models/dir/"]
)
def test_fetches_archive_or_directory_with_good_digest(
    server: ModelHttpServer, model_dir: Path, digest: str, tmp_path: Path, path: str
) -> None:
    dest = tmp_path / "models"
    assert fetch_model(server.url(path), dest, sha256=digest, retry=FAST_RETRY) == dest
    assert sorted(child.name for child in dest.iterdir()) == [
        ".ferry-complete",
        "model.json",
        "model.pt",
    ]
    assert_same_model(dest, model_dir)
    marker = json.loads((dest / ".ferry-complete").read_text())
    assert marker["sha256"] == digest
    assert marker["source"] == server.url(path)
    assert sorted(marker["entries"]) == ["model.json", "model.pt"]


def test_directory_url_fetches_both_files(server: ModelHttpServer, tmp_path: Path) -> None:
    fetch_model(server.url("/models/dir/"), tmp_path / "m", retry=FAST_RETRY)
    assert sorted(r.path for r in server.requests) == [
        "/models/dir/model.json",
        "/models/dir/model.pt",
    ]


def test_bad_digest_names_both_and_leaves_nothing_complete(
    server: ModelHttpServer, digest: str, tmp_path: Path
) -> None:
    wrong = "0" * 64
    dest = tmp_path / "models"
    with pytest.raises(FetchError) as caught:
        fetch_model(server.url("/models/resnet.tar.gz"), dest, sha256=wrong, retry=FAST_RETRY)
    assert wrong in str(caught.value)
    assert digest in str(caught.value)
    assert_not_complete(dest)
    assert list(dest.iterdir()) == []


def test_rerun_over_complete_dir_is_a_noop(
    server: ModelHttpServer, digest: str, tmp_path: Path
) -> None:
    dest = tmp_path / "models"
    url = server.url("/models/resnet.tar.gz")
    fetch_model(url, dest, sha256=digest, retry=FAST_RETRY)
    marker_before = (dest / ".ferry-complete").stat()
    requests_before = len(server.requests)
    fetch_model(url, dest, sha256=digest.upper(), retry=FAST_RETRY)
    fetch_model(url, dest, retry=FAST_RETRY)
    assert len(server.requests) == requests_before
    assert (dest / ".ferry-complete").stat().st_ino == marker_before.st_ino

    # Asking for another digest fetches again, fails, and the old marker is gone.
    with pytest.raises(FetchError, match="sha256 mismatch"):
        fetch_model(url, dest, sha256="1" * 64, retry=FAST_RETRY)
    assert len(server.requests) == requests_before + 1
    assert not (dest / ".ferry-complete").exists()


def test_authorization_header_from_env(
    server: ModelHttpServer, digest: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.required_authorization = TOKEN
    url = server.url("/models/resnet.tar.gz")
    monkeypatch.delenv("FERRY_RUNTIME_FETCH_AUTHORIZATION", raising=False)
    with pytest.raises(FetchError, match=r"HTTP 401.*FERRY_RUNTIME_FETCH_AUTHORIZATION"):
        fetch_model(url, tmp_path / "a", retry=FAST_RETRY)
    assert_not_complete(tmp_path / "a")

    monkeypatch.setenv("FERRY_RUNTIME_FETCH_AUTHORIZATION", "Bearer wrong")
    with pytest.raises(FetchError, match="was refused"):
        fetch_model(url, tmp_path / "b", retry=FAST_RETRY)

    monkeypatch.setenv("FERRY_RUNTIME_FETCH_AUTHORIZATION", TOKEN)
    fetch_model(url, tmp_path / "c", sha256=digest, retry=FAST_RETRY)
    assert server.requests[-1].authorization == TOKEN
    assert (tmp_path / "c" / ".ferry-complete").is_file()


def test_404_is_a_clear_error_without_retries(server: ModelHttpServer, tmp_path: Path) -> None:
    with pytest.raises(FetchError, match=r"/models/missing\.tar\.gz: HTTP 404"):
        fetch_model(server.url("/models/missing.tar.gz"), tmp_path / "m", retry=FAST_RETRY)
    assert len(server.requests) == 1
    assert_not_complete(tmp_path / "m")


def test_query_string_is_kept_out_of_messages_and_marker(
    server: ModelHttpServer, tmp_path: Path
) -> None:
    url = server.url("/models/missing.tar.gz?X-Amz-Signature=topsecret")
    with pytest.raises(FetchError) as caught:
        fetch_model(url, tmp_path / "m", retry=FAST_RETRY)
    assert "topsecret" not in str(caught.value)


def test_connection_closed_mid_body_is_retried_then_fails_incomplete(
    server: ModelHttpServer, tmp_path: Path
) -> None:
    path = "/models/resnet.tar.gz"
    server.truncate.add(path)
    dest = tmp_path / "models"
    with pytest.raises(FetchError, match="after 3 attempts"):
        fetch_model(server.url(path), dest, retry=FAST_RETRY)
    assert [r.path for r in server.requests] == [path] * 3
    assert_not_complete(dest)
    assert list(dest.iterdir()) == []


def test_transient_503_is_retried_with_backoff(
    server: ModelHttpServer, digest: str, tmp_path: Path
) -> None:
    path = "/models/resnet.tar.gz"
    server.fail_first[path] = 2
    fetch_model(server.url(path), tmp_path / "m", sha256=digest, retry=FAST_RETRY)
    assert len(server.requests) == 3
    assert (tmp_path / "m" / ".ferry-complete").is_file()


def test_missing_model_json_is_a_clear_error(server: ModelHttpServer, tmp_path: Path) -> None:
    with pytest.raises(
        FetchError, match=r"no model\.json or model\.pt2 found \(the top level holds: model\.pt\)"
    ):
        fetch_model(server.url("/models/nojson.tar.gz"), tmp_path / "m", retry=FAST_RETRY)
    assert list((tmp_path / "m").iterdir()) == []


def test_path_traversal_archive_is_refused(server: ModelHttpServer, tmp_path: Path) -> None:
    dest = tmp_path / "inner" / "models"
    with pytest.raises(FetchError, match=r"'\.\./evil\.txt'.*escape"):
        fetch_model(server.url("/models/evil.tar.gz"), dest, retry=FAST_RETRY)
    assert not (tmp_path / "inner" / "evil.txt").exists()
    assert list(dest.iterdir()) == []


def test_sigterm_during_download_exits_without_a_complete_dir(
    server: ModelHttpServer, tmp_path: Path
) -> None:
    """As PID 1 a default SIGTERM is ignored; fetch turns it into a clean, incomplete exit."""
    path = "/models/resnet.tar.gz"
    server.stall.add(path)
    dest = tmp_path / "models"
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from ferry_runtime.fetch import FetchError, fetch_model\n"
        "try:\n"
        f"    fetch_model({server.url(path)!r}, Path({str(dest)!r}))\n"
        "except FetchError as error:\n"
        "    print(error, file=sys.stderr)\n"
        "    sys.exit(1)\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", script], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 30
        while not server.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.requests, "the fetch never reached the server"
        time.sleep(0.2)  # headers and half the body are in flight
        child.send_signal(signal.SIGTERM)
        _, stderr = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 1
    assert b"interrupted by SIGTERM" in stderr
    assert_not_complete(dest)
    assert list(dest.iterdir()) == []

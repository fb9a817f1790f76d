"""``ferry-runtime``: serve's settings and failures, fetch's exit status and messages."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from ferry_runtime import cli


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("FERRY_RUNTIME_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")  # serve sets it; keep the test env as is


def test_fetch_maps_fetch_errors_to_status_1(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from ferry_runtime import fetch

    def failing(uri: str, dest: Path, *, sha256: str | None = None) -> Path:
        raise fetch.FetchError(f"sha256 mismatch for {uri}")

    monkeypatch.setattr(fetch, "fetch_model", failing)
    assert cli.main(["fetch", "http://127.0.0.1:1/m/", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert "sha256 mismatch for http://127.0.0.1:1/m/" in captured.err
    assert captured.out == ""


def test_fetch_passes_uri_dest_and_digest(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from ferry_runtime import fetch

    calls: list[tuple[str, Path, str | None]] = []

    def fake(uri: str, dest: Path, *, sha256: str | None = None) -> Path:
        calls.append((uri, dest, sha256))
        return dest

    monkeypatch.setattr(fetch, "fetch_model", fake)
    assert cli.main(["fetch", "s3://b/k/", str(tmp_path), "--sha256", "ab" * 32]) == 0
    assert calls == [("s3://b/k/", tmp_path, "ab" * 32)]
    assert capsys.readouterr().out.strip() == str(tmp_path)


def test_serve_refuses_bad_settings_with_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FERRY_RUNTIME_MAX_BATCH_SIZE", "zero")
    assert cli.main(["serve"]) == 2
    assert "max_batch_size" in capsys.readouterr().err


def test_serve_without_a_model_ends_with_the_load_failure_status(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    termination_log = tmp_path / "termination-log"
    termination_log.write_text("")
    monkeypatch.setenv("FERRY_RUNTIME_TERMINATION_LOG", str(termination_log))
    status = cli.main(["serve", "--model-dir", str(tmp_path / "none"), "--http-port", "0"])
    assert status == 3
    assert "does not exist" in capsys.readouterr().err
    assert termination_log.read_text().startswith("model load failed: model directory")


def test_serve_help_lists_the_overrides(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model-dir", "--http-port", "--grpc-port", "--device"):
        assert flag in out


def test_python_dash_m_is_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "ferry_runtime", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0
    assert "serve" in result.stdout
    assert "fetch" in result.stdout


def test_fetch_takes_the_digest_from_the_pod_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from ferry_runtime import fetch

    calls: list[str | None] = []

    def fake(uri: str, dest: Path, *, sha256: str | None = None) -> Path:
        calls.append(sha256)
        return dest

    monkeypatch.setattr(fetch, "fetch_model", fake)
    monkeypatch.setenv("FERRY_RUNTIME_MODEL_SHA256", "cd" * 32)
    assert cli.main(["fetch", "s3://b/k/", str(tmp_path)]) == 0
    assert cli.main(["fetch", "s3://b/k/", str(tmp_path), "--sha256", "ef" * 32]) == 0
    assert calls == ["cd" * 32, "ef" * 32]

"""RuntimeSettings: the FERRY_RUNTIME_* environment contract."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from ferry_runtime.server import batching_options
from ferry_runtime.settings import RuntimeSettings
from pydantic import ValidationError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("FERRY_RUNTIME_"):
            monkeypatch.delenv(name)


def test_defaults_are_the_documented_ones() -> None:
    settings = RuntimeSettings()
    assert settings.model_dir == Path("/models")
    assert settings.model_name == "model"
    assert settings.model_version == "1"
    assert settings.model_format == "auto"
    assert settings.model_sha256 is None
    assert settings.device == "auto"
    assert settings.threads == 0
    assert settings.host == "0.0.0.0"
    assert (settings.http_port, settings.grpc_port) == (8080, 8081)
    assert settings.batching_enabled is True
    assert settings.max_batch_size == 32
    assert settings.max_queue_delay_ms == 5
    assert settings.preferred_batch_sizes == []
    assert settings.max_queue_size == 1024
    assert settings.max_request_bytes == 67108864
    assert settings.drain_timeout_s == 30
    assert settings.log_level == "info"


def test_every_field_has_a_docstring() -> None:
    for name, field in RuntimeSettings.model_fields.items():
        assert field.description, f"{name} has no docstring"


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "FERRY_RUNTIME_MODEL_DIR": "/mnt/model",
        "FERRY_RUNTIME_MODEL_NAME": "resnet",
        "FERRY_RUNTIME_MODEL_VERSION": "3",
        "FERRY_RUNTIME_MODEL_SHA256": "AB" * 32,
        "FERRY_RUNTIME_DEVICE": "cuda",
        "FERRY_RUNTIME_THREADS": "4",
        "FERRY_RUNTIME_HOST": "127.0.0.1",
        "FERRY_RUNTIME_HTTP_PORT": "9000",
        "FERRY_RUNTIME_GRPC_PORT": "9001",
        "FERRY_RUNTIME_BATCHING_ENABLED": "false",
        "FERRY_RUNTIME_MAX_BATCH_SIZE": "64",
        "FERRY_RUNTIME_MAX_QUEUE_DELAY_MS": "2.5",
        "FERRY_RUNTIME_PREFERRED_BATCH_SIZES": "[8, 16]",
        "FERRY_RUNTIME_MAX_QUEUE_SIZE": "10",
        "FERRY_RUNTIME_MAX_REQUEST_BYTES": "4096",
        "FERRY_RUNTIME_DRAIN_TIMEOUT_S": "12",
        "FERRY_RUNTIME_LOG_LEVEL": "DEBUG",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    settings = RuntimeSettings()
    assert settings.model_dir == Path("/mnt/model")
    assert settings.model_name == "resnet"
    assert settings.model_version == "3"
    assert settings.model_sha256 == "ab" * 32
    assert settings.device == "cuda"
    assert settings.threads == 4
    assert (settings.host, settings.http_port, settings.grpc_port) == ("127.0.0.1", 9000, 9001)
    assert settings.batching_enabled is False
    assert settings.max_batch_size == 64
    assert settings.max_queue_delay_ms == 2.5
    assert settings.preferred_batch_sizes == [8, 16]
    assert settings.max_queue_size == 10
    assert settings.max_request_bytes == 4096
    assert settings.drain_timeout_s == 12
    assert settings.log_level == "debug"
    options = batching_options(settings)
    assert options.max_queue_delay_s == 0.0025
    assert options.preferred_batch_sizes == (8, 16)
    assert options.enabled is False


def test_an_empty_sha256_means_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_RUNTIME_MODEL_SHA256", "")
    assert RuntimeSettings().model_sha256 is None


def test_settings_are_read_at_construction_not_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_RUNTIME_MODEL_NAME", "first")
    assert RuntimeSettings().model_name == "first"
    monkeypatch.setenv("FERRY_RUNTIME_MODEL_NAME", "second")
    assert RuntimeSettings().model_name == "second"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("FERRY_RUNTIME_DEVICE", "tpu", "device"),
        ("FERRY_RUNTIME_MODEL_FORMAT", "onnx", "model_format"),
        ("FERRY_RUNTIME_MODEL_SHA256", "abc", "model_sha256"),
        ("FERRY_RUNTIME_MAX_BATCH_SIZE", "0", "max_batch_size"),
        ("FERRY_RUNTIME_HTTP_PORT", "70000", "http_port"),
        ("FERRY_RUNTIME_THREADS", "-1", "threads"),
        ("FERRY_RUNTIME_PREFERRED_BATCH_SIZES", "[64]", "preferred_batch_sizes"),
        ("FERRY_RUNTIME_PREFERRED_BATCH_SIZES", "[4, 4]", "repeat"),
        ("FERRY_RUNTIME_PREFERRED_BATCH_SIZES", "8", "preferred_batch_sizes"),
        ("FERRY_RUNTIME_MAX_QUEUE_DELAY_MS", "-1", "max_queue_delay_ms"),
        ("FERRY_RUNTIME_LOG_LEVEL", "loud", "log_level"),
        ("FERRY_RUNTIME_MODEL_NAME", "a/b", "model_name"),
        ("FERRY_RUNTIME_GRPC_PORT", "8080", "both 8080"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=message):
        RuntimeSettings()

"""Operator settings: FERRY_* environment, flags, documentation."""

from __future__ import annotations

import pydantic
import pytest
from ferry_operator import constants
from ferry_operator.settings import OperatorSettings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "FERRY_WATCH_NAMESPACES",
        "FERRY_RUNTIME_IMAGE",
        "FERRY_LOG_FORMAT",
        "FERRY_STANDALONE",
    ):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    settings = OperatorSettings()
    assert settings.watch_namespaces == ()
    assert settings.clusterwide
    assert settings.runtime_image == constants.DEFAULT_RUNTIME_IMAGE
    assert (settings.log_format, settings.standalone, settings.peering_name) == (
        "plain",
        False,
        "ferry",
    )


def test_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_WATCH_NAMESPACES", "team-a, team-b,")
    monkeypatch.setenv("FERRY_RUNTIME_IMAGE", "registry.example/ferry-runtime:2")
    monkeypatch.setenv("FERRY_LOG_FORMAT", "json")
    monkeypatch.setenv("FERRY_STANDALONE", "true")
    monkeypatch.setenv(
        "FERRY_RUNTIME_MODEL_DIR", "/ignored"
    )  # the runtime's variables are not ours
    settings = OperatorSettings()
    assert settings.watch_namespaces == ("team-a", "team-b")
    assert not settings.clusterwide
    assert settings.runtime_image == "registry.example/ferry-runtime:2"
    assert settings.log_format == "json"
    assert settings.standalone


def test_flags_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_WATCH_NAMESPACES", "team-a")
    settings = OperatorSettings().with_overrides(
        namespaces=["team-c"], standalone=True, liveness="http://0.0.0.0:8080/healthz"
    )
    assert settings.watch_namespaces == ("team-c",)
    assert settings.standalone
    assert settings.liveness_endpoint == "http://0.0.0.0:8080/healthz"
    assert OperatorSettings().with_overrides().watch_namespaces == ("team-a",)


def test_invalid_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_LOG_FORMAT", "xml")
    with pytest.raises(pydantic.ValidationError, match="log_format"):
        OperatorSettings()


def test_every_setting_is_documented() -> None:
    for name, field in OperatorSettings.model_fields.items():
        assert field.description, f"{name} has no docstring"


def test_standalone_and_required_peering_exclude_each_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FERRY_REQUIRE_PEERING", "true")
    assert OperatorSettings().require_peering
    with pytest.raises(pydantic.ValidationError, match="exclude each other"):
        OperatorSettings().with_overrides(standalone=True)

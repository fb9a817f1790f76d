"""`helm lint --strict` on the chart, with its defaults and with every values file."""

from __future__ import annotations

import pytest
from chart_support import CHART, VALUES_DIR, helm_binary, run_helm

VALUES_FILES = sorted(path.name for path in VALUES_DIR.glob("*.yaml"))


def test_helm_v3_is_available() -> None:
    helm = helm_binary()
    assert helm is not None, "helm v3 not on PATH or in .venv/bin: run `make venv`"
    version = run_helm("version", "--short")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("v3."), version.stdout


def test_lint_strict_with_defaults() -> None:
    result = run_helm("lint", "--strict", str(CHART))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize("values_file", VALUES_FILES)
def test_lint_strict_with_values_file(values_file: str) -> None:
    result = run_helm("lint", "--strict", str(CHART), "--values", str(VALUES_DIR / values_file))
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_files_cover_the_documented_cases() -> None:
    assert {
        "ha.yaml",
        "namespaced.yaml",
        "namespaced-ha.yaml",
        "servicemonitor.yaml",
        "custom-image.yaml",
        "everything.yaml",
    } <= set(VALUES_FILES)

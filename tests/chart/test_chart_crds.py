"""The chart ships the generated CRD unchanged: charts/ferry/crds/ equals crds/ at the root."""

from __future__ import annotations

import yaml
from chart_support import (
    CHART,
    KUBERNETES_VERSIONS,
    ROOT,
    kubernetes_validation_errors,
    run_helm,
    template_args,
)
from ferry_operator import constants

CRD_FILE = f"{constants.GROUP}_{constants.PLURAL}.yaml"


def test_root_crd_is_generated() -> None:
    assert (ROOT / "crds" / CRD_FILE).is_file(), "crds/ has no CRD: run `make crd`"


def test_chart_crds_equal_root_crds() -> None:
    root = {path.name: path.read_bytes() for path in (ROOT / "crds").glob("*.yaml")}
    chart = {path.name: path.read_bytes() for path in (CHART / "crds").glob("*.yaml")}
    assert CRD_FILE in chart, "charts/ferry/crds/ has no CRD: run `make crd`"
    assert chart == root, "charts/ferry/crds/ differs from crds/: run `make crd`"


def test_helm_installs_the_model_deployment_crd() -> None:
    result = run_helm(*template_args(), "--include-crds")
    assert result.returncode == 0, result.stderr
    crds = [
        doc
        for doc in yaml.safe_load_all(result.stdout)
        if doc and doc["kind"] == "CustomResourceDefinition"
    ]
    assert [crd["metadata"]["name"] for crd in crds] == [constants.CRD_NAME]
    assert crds[0]["spec"]["group"] == constants.GROUP
    for version in KUBERNETES_VERSIONS:
        assert kubernetes_validation_errors(crds[0], version) == []

"""The chart's RBAC grants exactly what the operator uses: ferry_operator.cluster's
REQUIRED_PERMISSIONS (the operator's kmock tests check every request it makes against them),
filtered for the mode by the operator's own required_permissions(), nothing more; no wildcards,
no Secrets; split into a ClusterRole and per-namespace Roles with watchNamespaces."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
import yaml
from chart_support import CHART, NAMESPACE, Manifest, of_kind, render
from ferry_operator import cluster

Permission = tuple[str, str, frozenset[str]]


def _triple(permission: cluster.Permission) -> Permission:
    return (permission.api_group, permission.resource, frozenset(permission.verbs))


def _granted(rules: Iterable[dict[str, Any]]) -> set[Permission]:
    granted: set[Permission] = set()
    for rule in rules:
        assert set(rule) <= {"apiGroups", "resources", "verbs"}, rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.add((group, resource, frozenset(rule["verbs"])))
    return granted


def _rules(manifests: list[Manifest], kind: str) -> dict[str | None, set[Permission]]:
    return {
        manifest["metadata"].get("namespace"): _granted(manifest["rules"])
        for manifest in of_kind(manifests, kind)
    }


def _expected(*, namespaced: bool, ha: bool) -> tuple[set[Permission], set[Permission]]:
    """(ClusterRole, each Role) permissions the operator needs in a mode, from its own code."""
    needed = cluster.required_permissions(clusterwide=not namespaced, standalone=not ha)
    if not namespaced:
        return {_triple(p) for p in needed}, set()
    return (
        {_triple(p) for p in needed if p.cluster_scoped},
        {_triple(p) for p in needed if not p.cluster_scoped},
    )


def test_values_mirror_required_permissions_exactly() -> None:
    listed = yaml.safe_load((CHART / "values.yaml").read_text())["rbac"]["permissions"]
    mirrored = [
        (
            p["apiGroup"],
            p["resource"],
            tuple(p["verbs"]),
            p.get("clusterScoped", False),
            p.get("needed", "always"),
        )
        for p in listed
    ]
    required = [
        (p.api_group, p.resource, p.verbs, p.cluster_scoped, p.needed)
        for p in cluster.REQUIRED_PERMISSIONS
    ]
    assert mirrored == required


@pytest.mark.parametrize(
    ("values_files", "namespaced", "ha"),
    [
        ((), False, False),
        (("ha.yaml",), False, True),
        (("namespaced.yaml",), True, False),
        (("namespaced-ha.yaml",), True, True),
    ],
    ids=["clusterwide", "clusterwide-ha", "namespaced", "namespaced-ha"],
)
def test_rbac_is_exactly_what_the_operator_needs(
    values_files: tuple[str, ...], namespaced: bool, ha: bool
) -> None:
    manifests = render(values_files)
    expected_cluster, expected_namespaced = _expected(namespaced=namespaced, ha=ha)
    assert _rules(manifests, "ClusterRole") == {None: expected_cluster}
    if namespaced:
        assert _rules(manifests, "Role") == {
            "models": expected_namespaced,
            "models-staging": expected_namespaced,
        }
    else:
        assert of_kind(manifests, "Role") == []


@pytest.mark.parametrize("values_files", [(), ("namespaced-ha.yaml",), ("everything.yaml",)])
def test_no_wildcards_no_secrets_no_escalation(values_files: tuple[str, ...]) -> None:
    for role in of_kind(render(values_files), "ClusterRole") + of_kind(
        render(values_files), "Role"
    ):
        for rule in role["rules"]:
            assert "nonResourceURLs" not in rule
            assert "resourceNames" not in rule
            for field in ("apiGroups", "resources", "verbs"):
                assert all("*" not in item for item in rule[field]), rule
            assert "secrets" not in rule["resources"]
            assert {"escalate", "bind", "impersonate"}.isdisjoint(rule["verbs"])
            assert "rbac.authorization.k8s.io" not in rule["apiGroups"]


@pytest.mark.parametrize("values_files", [(), ("namespaced.yaml",), ("everything.yaml",)])
def test_bindings_name_the_operator_service_account(values_files: tuple[str, ...]) -> None:
    manifests = render(values_files)
    deployment = of_kind(manifests, "Deployment")[0]
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    bindings = of_kind(manifests, "ClusterRoleBinding") + of_kind(manifests, "RoleBinding")
    assert bindings
    roles = {
        (m["kind"], m["metadata"]["name"], m["metadata"].get("namespace"))
        for m in of_kind(manifests, "ClusterRole") + of_kind(manifests, "Role")
    }
    for binding in bindings:
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
        ]
        ref = binding["roleRef"]
        scope = binding["metadata"].get("namespace") if ref["kind"] == "Role" else None
        assert (ref["kind"], ref["name"], scope) in roles

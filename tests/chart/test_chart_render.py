"""`helm template` output: valid Kubernetes objects, and what each value does to them."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from chart_support import (
    CHART,
    KUBERNETES_VERSIONS,
    NAMESPACE,
    RELEASE,
    ROOT,
    VALUES_DIR,
    Manifest,
    container_env,
    kubernetes_validation_errors,
    of_kind,
    one,
    render,
    run_helm,
    template_args,
)
from ferry_operator import constants
from ferry_operator.render import RenderOptions, render_children
from ferry_operator.render.deployment import HTTP_PORT_NAME
from ferry_operator.spec import parse_model_deployment

VALUES_CASES: list[tuple[str, ...]] = [
    (),
    ("ha.yaml",),
    ("namespaced.yaml",),
    ("namespaced-ha.yaml",),
    ("servicemonitor.yaml",),
    ("servicemonitor.yaml", "namespaced.yaml"),
    ("custom-image.yaml",),
    ("everything.yaml",),
]


def case_id(values_files: tuple[str, ...]) -> str:
    return "+".join(Path(name).stem for name in values_files) or "defaults"


def operator_container(manifests: list[Manifest]) -> dict[str, Any]:
    deployment = one(manifests, "Deployment")
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["operator"]
    return containers[0]


# ServiceMonitor (monitoring.coreos.com/v1) is a Prometheus Operator CRD type that
# kubernetes-validate has no schema for. This is the subset of its published CRD schema that the
# chart may use, closed to unknown fields like --strict.
_LABEL_SELECTOR = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "matchLabels": {"type": "object", "additionalProperties": {"type": "string"}},
        "matchExpressions": {"type": "array", "items": {"type": "object"}},
    },
}
_DURATION = {
    "type": "string",
    "pattern": r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?)$",
}
SERVICE_MONITOR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "kind": {"const": "ServiceMonitor"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace"],
            "properties": {
                "name": {"type": "string", "maxLength": 63},
                "namespace": {"type": "string"},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "annotations": {"type": "object", "additionalProperties": {"type": "string"}},
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector"],
            "properties": {
                "jobLabel": {"type": "string"},
                "targetLabels": {"type": "array", "items": {"type": "string"}},
                "podTargetLabels": {"type": "array", "items": {"type": "string"}},
                "selector": _LABEL_SELECTOR,
                "namespaceSelector": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "any": {"type": "boolean"},
                        "matchNames": {"type": "array", "items": {"type": "string"}},
                    },
                },
                "endpoints": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]},
                            "interval": _DURATION,
                            "scrapeTimeout": _DURATION,
                            "honorLabels": {"type": "boolean"},
                        },
                    },
                },
            },
        },
    },
}


@pytest.mark.parametrize("values_files", VALUES_CASES, ids=case_id)
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_is_a_valid_kubernetes_object(
    values_files: tuple[str, ...], version: str
) -> None:
    problems: list[str] = []
    for manifest in render(values_files):
        name = f"{manifest['kind']}/{manifest['metadata']['name']}"
        if manifest["kind"] == "ServiceMonitor":
            validator = jsonschema.Draft202012Validator(SERVICE_MONITOR_SCHEMA)
            errors = [error.message for error in validator.iter_errors(manifest)]
        else:
            errors = kubernetes_validation_errors(manifest, version)
        problems += [f"{name}: {error}" for error in errors]
    assert problems == []


def test_the_validator_refuses_unknown_fields() -> None:
    deployment = one(render(), "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    assert kubernetes_validation_errors(deployment, "1.36") != []


@pytest.mark.parametrize("values_files", VALUES_CASES, ids=case_id)
def test_namespaced_objects_live_in_the_release_or_a_watched_namespace(
    values_files: tuple[str, ...],
) -> None:
    manifests = render(values_files)
    watched = _watched(values_files)
    for manifest in manifests:
        kind = manifest["kind"]
        namespace = manifest["metadata"].get("namespace")
        if kind in {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}:
            assert namespace is None, f"{kind} is cluster-scoped"
        elif kind in {"Role", "RoleBinding"}:
            assert namespace in watched
        else:
            assert namespace == NAMESPACE, f"{kind} outside the release namespace"


def _values_text(values_files: tuple[str, ...]) -> str:
    return "\n---\n".join((VALUES_DIR / name).read_text() for name in values_files)


def _watched(values_files: tuple[str, ...]) -> set[str]:
    watched: set[str] = set()
    for document in yaml.safe_load_all(_values_text(values_files)):
        if document and "watchNamespaces" in document:
            watched = set(document["watchNamespaces"])
    return watched


def test_names_and_labels_fit_63_characters_with_the_longest_release_name() -> None:
    release = "r" * 53  # Helm's own limit on release names
    for values_files in VALUES_CASES:
        for manifest in render(values_files, release=release):
            metadata = manifest["metadata"]
            if manifest["kind"] != "CustomResourceDefinition":
                assert len(metadata["name"]) <= 63, metadata["name"]
                assert not metadata["name"].endswith("-")
            for value in metadata.get("labels", {}).values():
                assert len(value) <= 63, value


def test_full_name_override_is_cut_to_63_characters() -> None:
    manifests = render(
        set_values=[f"fullnameOverride={'f' * 63}", "metrics.serviceMonitor.enabled=true"]
    )
    names = {m["metadata"]["name"] for m in manifests}
    assert "f" * 63 in names
    assert all(len(name) <= 63 for name in names)
    monitor = one(manifests, "ServiceMonitor")
    assert monitor["metadata"]["name"].endswith("-models")


def test_defaults_run_one_standalone_operator_with_the_operators_default_runtime_image() -> None:
    manifests = render()
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = operator_container(manifests)
    assert container["args"] == ["run", "--liveness", "http://0.0.0.0:8080/healthz", "--standalone"]
    env = container_env(container)
    assert env["FERRY_RUNTIME_IMAGE"] == constants.DEFAULT_RUNTIME_IMAGE
    assert "FERRY_PEERING_NAME" not in env
    assert container["image"] == "ghcr.io/ferry-serving/ferry-operator:0.1.0"
    assert of_kind(manifests, "CustomResourceDefinition") == []
    assert of_kind(manifests, "ServiceMonitor") == []
    assert of_kind(manifests, "PodDisruptionBudget") == []
    assert one(manifests, "ServiceAccount")["metadata"]["name"] == f"{RELEASE}"


def test_default_runtime_image_is_the_chart_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert constants.DEFAULT_RUNTIME_IMAGE.endswith(f":{chart['appVersion']}")


def test_liveness_probe_targets_the_kopf_liveness_endpoint() -> None:
    for values_files in VALUES_CASES:
        container = operator_container(render(values_files))
        url = container["args"][container["args"].index("--liveness") + 1]
        port = next(p for p in container["ports"] if p["name"] == "health")["containerPort"]
        assert url == f"http://0.0.0.0:{port}/healthz"
        probe = container["livenessProbe"]["httpGet"]
        assert probe == {"path": "/healthz", "port": "health"}


def test_ha_runs_two_peering_replicas_that_prefer_distinct_nodes() -> None:
    manifests = render(["ha.yaml"])
    deployment = one(manifests, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    container = operator_container(manifests)
    assert "--standalone" not in container["args"]
    # two replicas without peering would both act: refuse to start rather than fall back
    assert "--require-peering" in container["args"]
    assert container_env(container)["FERRY_PEERING_NAME"] == "ferry-ha"
    anti = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    term = anti["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]
    assert term["labelSelector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    budget = one(manifests, "PodDisruptionBudget")
    assert budget["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": deployment["spec"]["selector"]["matchLabels"]},
    }
    crd = one(manifests, "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "clusterkopfpeerings.kopf.dev"
    assert crd["spec"]["scope"] == "Cluster"
    assert crd["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_ha_in_watched_namespaces_uses_namespaced_peering() -> None:
    crd = one(render(["namespaced-ha.yaml"]), "CustomResourceDefinition")
    assert crd["metadata"]["name"] == "kopfpeerings.kopf.dev"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == "KopfPeering"


def test_peering_crd_can_be_left_to_another_installation() -> None:
    assert of_kind(render(["everything.yaml"]), "CustomResourceDefinition") == []


def test_watch_namespaces_become_namespace_arguments() -> None:
    container = operator_container(render(["namespaced.yaml"]))
    assert container["args"][-4:] == ["--namespace", "models", "--namespace", "models-staging"]


def test_custom_images_pull_secrets_and_digest() -> None:
    manifests = render(["custom-image.yaml"])
    container = operator_container(manifests)
    assert container["image"] == (
        "registry.example.com/platform/ferry-operator@sha256:"
        "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    )
    assert container["imagePullPolicy"] == "Always"
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    env = container_env(container)
    assert env["FERRY_RUNTIME_IMAGE"] == "registry.example.com/platform/ferry-runtime:0.1.0-cuda"


def test_image_tag_overrides_app_version() -> None:
    container = operator_container(render(set_values=["image.tag=0.2.0-rc.1"]))
    assert container["image"] == "ghcr.io/ferry-serving/ferry-operator:0.2.0-rc.1"


def test_every_optional_value_reaches_the_pod() -> None:
    manifests = render(["everything.yaml"])
    deployment = one(manifests, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(manifests)
    env = container_env(container)
    assert env["FERRY_LOG_FORMAT"] == "plain"
    assert env["FERRY_LOG_LEVEL"] == "debug"
    assert env["FERRY_EXTRA_SETTING"] == "1"
    assert env["FERRY_PEERING_NAME"] == "ferry-team-a"
    assert {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}} in (
        container["env"]
    )
    assert pod["serviceAccountName"] == "ferry-operator-sa"
    assert one(manifests, "ServiceAccount")["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/ferry"
    }
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert pod["tolerations"][0]["key"] == "dedicated"
    assert "nodeAffinity" in pod["affinity"]
    assert "podAntiAffinity" not in pod["affinity"]
    assert pod["priorityClassName"] == "system-cluster-critical"
    assert deployment["spec"]["template"]["metadata"]["annotations"] == {
        "example.com/team": "platform"
    }
    assert deployment["spec"]["template"]["metadata"]["labels"]["team"] == "platform"
    assert container["resources"]["limits"] == {"cpu": 1, "memory": "512Mi"}
    assert container["ports"][0]["containerPort"] == 9090
    assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == "ferry-ops"


def test_existing_service_account_is_used_and_not_created() -> None:
    manifests = render(set_values=["serviceAccount.create=false", "serviceAccount.name=ops"])
    assert of_kind(manifests, "ServiceAccount") == []
    pod = one(manifests, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "ops"
    for binding in of_kind(manifests, "ClusterRoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": "ops", "namespace": NAMESPACE}
        ]


def test_existing_service_account_needs_a_name() -> None:
    result = run_helm(*template_args(set_values=["serviceAccount.create=false"]))
    assert result.returncode != 0
    assert "serviceAccount.name is required" in result.stderr


def test_rbac_can_be_left_to_the_cluster_admin() -> None:
    kinds = {m["kind"] for m in render(set_values=["rbac.create=false"])}
    assert kinds.isdisjoint({"ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"})


def test_service_monitor_scrapes_every_ferry_model_server() -> None:
    monitor = one(render(["servicemonitor.yaml"]), "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["selector"]["matchLabels"] == {
        constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
        constants.LABEL_COMPONENT: constants.COMPONENT,
    }
    endpoint = monitor["spec"]["endpoints"][0]
    assert endpoint["path"] == "/metrics"
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("15s", "5s")


def test_service_monitor_in_watched_namespaces_only() -> None:
    monitor = one(render(["servicemonitor.yaml", "namespaced.yaml"]), "ServiceMonitor")
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["models", "models-staging"]}


def _notes(tmp_path: Path, *set_values: str) -> str:
    """NOTES.txt rendered: helm template skips it, so a copy of the chart includes it in a
    manifest (install --dry-run would need a cluster)."""
    chart = tmp_path / "ferry"
    shutil.copytree(CHART, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        'notes: |\n  {{- include "ferry/templates/NOTES.txt" . | nindent 2 }}\n'
    )
    args = ["template", RELEASE, str(chart), "--namespace", NAMESPACE]
    args += ["--show-only", "templates/zz-notes.yaml"]
    for item in set_values:
        args += ["--set", item]
    result = run_helm(*args)
    assert result.returncode == 0, result.stderr
    return str(yaml.safe_load(result.stdout)["notes"])


def test_notes_tell_the_next_command(tmp_path: Path) -> None:
    notes = _notes(tmp_path)
    assert f"kubectl --namespace {NAMESPACE} rollout status deployment/{RELEASE}" in notes
    assert "kubectl wait modeldeployment/NAME --for=condition=Ready" in notes
    assert "every namespace" in notes
    assert constants.DEFAULT_RUNTIME_IMAGE in notes


def test_notes_follow_the_values(tmp_path: Path) -> None:
    notes = _notes(
        tmp_path, "ha.enabled=true", "watchNamespaces={a,b}", "metrics.serviceMonitor.enabled=true"
    )
    assert "2 replicas with Kopf peering" in notes
    assert "in: a, b." in notes
    assert "ServiceMonitor ferry-models" in notes


def test_service_monitor_matches_the_services_ferry_renders() -> None:
    """The selector and port name of the ServiceMonitor find the Service the operator renders
    for a ModelDeployment (its HTTP port serves /metrics, per docs/contracts.md)."""
    example = yaml.safe_load((ROOT / "examples" / "modeldeployment.yaml").read_text())
    children = render_children(parse_model_deployment(example), RenderOptions(require_owner=False))
    service = next(child for child in children if child["kind"] == "Service")
    monitor = one(render(["servicemonitor.yaml"]), "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    port_names = {port["name"] for port in service["spec"]["ports"]}
    assert monitor["spec"]["endpoints"][0]["port"] in port_names
    assert monitor["spec"]["endpoints"][0]["port"] == HTTP_PORT_NAME
    for label in monitor["spec"]["targetLabels"]:
        assert label in service["metadata"]["labels"]

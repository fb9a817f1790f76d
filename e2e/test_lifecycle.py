"""One ModelDeployment through its life: scaled through the scale subresource, its children
edited and deleted by hand and restored, rolled to a new model version under load without a
failed request, then deleted with every child collected."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from e2e_examples import default_example, store_url
from e2e_kube import (
    GROUP,
    PLURAL,
    VERSION,
    Kube,
    Operator,
    Settings,
    ready_md,
    wait_for,
)
from e2e_load import LoadPlan, start_load
from e2e_models import ModelVersion
from e2e_reach import Reach
from e2e_serving import infer_through_service, live_children, no_children_left
from prometheus_client.parser import text_string_to_metric_families

NAME = "mlp-lifecycle"
LOADER = "rollout-load"


@pytest.fixture(scope="module")
def life(
    kube: Kube, ns: str, *, ferry: Operator, store_base: str, models: dict[str, ModelVersion]
) -> Iterator[dict[str, Any]]:
    """The default example, renamed, with two replicas so a rollout always has a ready pod."""
    body = default_example(ns, store_base, models)
    body["metadata"]["name"] = NAME
    body["spec"]["replicas"] = 2
    kube.create_md(body)
    wait_for(
        lambda: kube.children(ns, NAME)["Deployment"],
        timeout=30,
        what=f"the Deployment of {NAME}",
    )
    yield body
    kube.delete_md(ns, NAME)


def _deployment_replicas(kube: Kube, ns: str) -> int:
    return int(kube.apps.read_namespaced_deployment(NAME, ns).spec.replicas or 0)


def test_scale_subresource(kube: Kube, ns: str, life: dict[str, Any]) -> None:
    scale = kube.get_scale(ns, NAME)
    assert scale["spec"]["replicas"] == 2
    kube.custom.patch_namespaced_custom_object_scale(
        GROUP, VERSION, ns, PLURAL, NAME, {"spec": {"replicas": 3}}
    )
    md = kube.get_md(ns, NAME)
    assert md is not None
    assert md["spec"]["replicas"] == 3
    wait_for(lambda: _deployment_replicas(kube, ns) == 3, timeout=30, what="Deployment at 3")

    def scale_status() -> dict[str, Any] | None:
        scale = kube.get_scale(ns, NAME)
        status = scale.get("status") or {}
        return scale if status.get("replicas") == 3 and status.get("selector") else None

    scale = wait_for(scale_status, timeout=60, what="the scale subresource to report 3 pods")
    pods = kube.pods(ns, scale["status"]["selector"])
    assert len([p for p in pods if not p.metadata.deletion_timestamp]) == 3

    kube.kubectl("-n", ns, "scale", f"modeldeployment/{NAME}", "--replicas=2")
    wait_for(lambda: _deployment_replicas(kube, ns) == 2, timeout=30, what="Deployment at 2")


def test_deleted_children_are_restored(kube: Kube, ns: str, life: dict[str, Any]) -> None:
    service = kube.core.read_namespaced_service(NAME, ns)
    pdb = kube.policy.read_namespaced_pod_disruption_budget(NAME, ns)
    kube.core.delete_namespaced_service(NAME, ns)
    kube.policy.delete_namespaced_pod_disruption_budget(NAME, ns)

    def recreated() -> bool:
        live = kube.children(ns, NAME)
        services = [s for s in live["Service"] if s.metadata.uid != service.metadata.uid]
        budgets = [b for b in live["PodDisruptionBudget"] if b.metadata.uid != pdb.metadata.uid]
        return bool(services and budgets)

    wait_for(recreated, timeout=30, what="the deleted Service and PodDisruptionBudget to return")


def test_edited_children_are_restored(kube: Kube, ns: str, life: dict[str, Any]) -> None:
    deployment = kube.apps.read_namespaced_deployment(NAME, ns)
    container = deployment.spec.template.spec.containers[0]
    original = {e.name: e.value for e in container.env or ()}
    assert "FERRY_RUNTIME_MAX_BATCH_SIZE" in original
    kube.apps.patch_namespaced_deployment(
        NAME,
        ns,
        {
            "spec": {
                "replicas": 5,
                "template": {
                    "spec": {
                        "containers": [
                            {
                                "name": container.name,
                                "env": [{"name": "FERRY_RUNTIME_MAX_BATCH_SIZE", "value": "1"}],
                            }
                        ]
                    }
                },
            }
        },
        field_manager="e2e-intruder",
        # a strategic merge patch merges env by name (the client's default is a JSON patch)
        _content_type="application/strategic-merge-patch+json",
    )

    def restored() -> bool:
        live = kube.apps.read_namespaced_deployment(NAME, ns)
        env = {e.name: e.value for e in live.spec.template.spec.containers[0].env or ()}
        return bool(live.spec.replicas == 2 and env == original)

    wait_for(restored, timeout=30, what="the hand-edited Deployment to be restored")


def test_rollout_to_a_new_model_version_under_load_fails_no_request(
    kube: Kube,
    ns: str,
    life: dict[str, Any],
    *,
    store_ready: str,
    store_base: str,
    models: dict[str, ModelVersion],
    settings: Settings,
    reach: Reach,
) -> None:
    wait_for(
        lambda: ready_md(kube, ns, NAME),
        timeout=settings.timeout,
        what=f"{NAME} to be Ready on version 1",
        details=lambda: kube.describe(ns, NAME),
    )
    service = life["spec"].get("service", {})
    port, grpc_port = service.get("httpPort", 8080), service.get("grpcPort", 8081)
    plan = LoadPlan(
        service=NAME,
        port=port,
        model=NAME,
        expect_version="2",
        settle=10,
        max_seconds=settings.timeout + 120,
    )
    new_uri = store_url(store_base, models["2"].store_path)
    with start_load(kube, reach, settings, ns, plan, pod_name=LOADER) as load:
        load.wait_sending()
        md = kube.patch_md(ns, NAME, {"spec": {"model": {"uri": new_uri, "version": "2"}}})
        generation = md["metadata"]["generation"]

        def rolled_out() -> bool:
            md = ready_md(kube, ns, NAME)
            if md is None or md["metadata"]["generation"] != generation:
                return False
            if md["status"].get("model", {}).get("version") != "2":
                return False
            status = kube.apps.read_namespaced_deployment(NAME, ns).status
            return bool(status.updated_replicas == status.replicas == status.ready_replicas == 2)

        wait_for(
            rolled_out,
            timeout=settings.timeout,
            what=f"{NAME} to roll out version 2",
            details=lambda: f"{kube.describe(ns, NAME)}\nload: {load.progress()}",
        )
        summary = load.summary(timeout=settings.timeout + 180)
    assert summary["failures"] == 0, summary["errors"]
    assert summary["settled"], summary
    assert summary["versions"].get("1", 0) > 0, summary
    assert summary["versions"].get("2", 0) > 0, summary

    infer_through_service(
        kube,
        reach,
        ns,
        service=NAME,
        ports=(port, grpc_port),
        served_name=NAME,
        model=models["2"],
    )


def test_deleting_it_collects_every_child(kube: Kube, ns: str, life: dict[str, Any]) -> None:
    assert live_children(kube, ns, NAME)
    kube.delete_md(ns, NAME)
    wait_for(
        lambda: kube.get_md(ns, NAME) is None and no_children_left(kube, ns, NAME),
        timeout=120,
        what=f"the garbage collector to remove every child of {NAME}",
        details=lambda: str(live_children(kube, ns, NAME)),
    )


def test_operator_metrics_count_what_it_did(ferry: Operator) -> None:
    """The operator's /metrics after the suite's work: reconciles that changed something, their
    durations, and API requests by verb and code (patches answered 200 among them)."""
    if ferry.metrics_url is None:
        pytest.skip("the operator runs in a pod the suite does not scrape (chart mode)")
    with urllib.request.urlopen(ferry.metrics_url, timeout=10) as response:
        text = response.read().decode()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    changed = samples["ferry_operator_reconciles_total", (("outcome", "changed"),)]
    assert changed >= 10, samples  # every example and the lifecycle wrote children and status
    assert samples["ferry_operator_reconcile_duration_seconds_count", ()] >= changed
    assert samples["ferry_operator_api_requests_total", (("code", "200"), ("verb", "patch"))] > 0
    assert samples["ferry_operator_api_requests_total", (("code", "200"), ("verb", "watch"))] > 0
    assert ("ferry_operator_queue_depth", ()) in samples

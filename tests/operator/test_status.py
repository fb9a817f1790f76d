"""Status bookkeeping: conventions, transition times, blocked specs, kstatus and the CRD."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from ferry_operator.crd import build_crd
from ferry_operator.errors import Blocked
from ferry_operator.spec import ModelDeploymentStatus, parse_model_deployment
from ferry_operator.status import Observation, compute_status, desired_facts, status_changed

READY_DEPLOYMENT: dict[str, Any] = {
    "metadata": {"name": "mlp", "generation": 2},
    "spec": {"replicas": 2},
    "status": {
        "observedGeneration": 2,
        "replicas": 2,
        "updatedReplicas": 2,
        "readyReplicas": 2,
        "availableReplicas": 2,
    },
}
ROLLING_DEPLOYMENT: dict[str, Any] = {
    "metadata": {"name": "mlp", "generation": 3},
    "spec": {"replicas": 2},
    "status": {"observedGeneration": 3, "replicas": 2, "updatedReplicas": 1, "readyReplicas": 1},
}


def _md(**spec: Any) -> Any:
    return parse_model_deployment(
        {
            "apiVersion": "serving.ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "mlp", "namespace": "team-a", "uid": "u-1", "generation": 2},
            "spec": {"model": {"uri": "s3://models/mlp/", "sha256": "a" * 64}, **spec},
        }
    )


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {condition["type"]: condition for condition in status["conditions"]}


def kstatus(obj: dict[str, Any]) -> str:
    """cli-utils kstatus for a custom resource (the rules Flux and kpt apply)."""
    status = obj.get("status") or {}
    if status.get("observedGeneration") != obj["metadata"]["generation"]:
        return "InProgress"
    conditions = _conditions(status) if status.get("conditions") else {}
    if conditions.get("Reconciling", {}).get("status") == "True":
        return "InProgress"
    if conditions.get("Stalled", {}).get("status") == "True":
        return "Failed"
    return "Current"


def test_facts_name_the_service_and_model() -> None:
    facts = desired_facts(_md(service={"httpPort": 80, "grpcPort": 9000}))
    assert facts["url"] == {"rest": "http://mlp.team-a.svc:80", "grpc": "mlp.team-a.svc:9000"}
    assert facts["model"] == {
        "name": "mlp",
        "version": "1",
        "uri": "s3://models/mlp/",
        "sha256": "a" * 64,
    }
    assert "serving.ferry.dev/model-deployment=mlp" in facts["selector"].split(",")


def test_transition_time_is_kept_while_status_stays_the_same() -> None:
    rolling = compute_status(Observation(3, deployment=ROLLING_DEPLOYMENT), None, "T1")
    # Same status (Ready False), other reason: the time of the last *status* change stays.
    loading = compute_status(
        Observation(3, deployment=ROLLING_DEPLOYMENT, pods=[_loading_pod()]), rolling, "T2"
    )
    assert _conditions(loading)["Ready"]["reason"] == "ModelLoading"
    assert _conditions(loading)["Ready"]["lastTransitionTime"] == "T1"
    ready = compute_status(Observation(3, deployment=READY_DEPLOYMENT), loading, "T3")
    assert _conditions(ready)["Ready"] == {
        "type": "Ready",
        "status": "True",
        "reason": "AllReplicasReady",
        "message": "2 of 2 replicas ready",
        "lastTransitionTime": "T3",
        "observedGeneration": 3,
    }
    assert _conditions(ready)["Degraded"]["lastTransitionTime"] == "T1"  # False all along


def _loading_pod() -> dict[str, Any]:
    return {
        "metadata": {"name": "p"},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Ready", "status": "False"},
            ],
        },
    }


def test_unchanged_state_needs_no_write() -> None:
    first = compute_status(Observation(2, deployment=READY_DEPLOYMENT), None, "T1")
    again = compute_status(Observation(2, deployment=READY_DEPLOYMENT), first, "T2")
    assert again == first
    assert not status_changed(first, again)
    assert status_changed(
        first, compute_status(Observation(3, deployment=READY_DEPLOYMENT), first, "T2")
    )


def test_missing_deployment_is_a_rollout_in_progress() -> None:
    status = compute_status(Observation(1), None, "T")
    assert _conditions(status)["Ready"]["reason"] == "RolloutInProgress"
    assert status["replicas"] == 0


def test_blocked_spec_keeps_describing_the_children_still_serving() -> None:
    facts = desired_facts(_md())
    good = compute_status(Observation(1, deployment=READY_DEPLOYMENT, **facts), None, "T1")
    blocked = Blocked("InvalidSpec", "spec.model.uri: file:// URIs are for local mode only")
    status = compute_status(
        Observation(2, blocked=blocked, deployment=READY_DEPLOYMENT), good, "T2"
    )
    conditions = _conditions(status)
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == "InvalidSpec"
    assert conditions["Ready"]["message"] == blocked.message
    assert conditions["Degraded"]["status"] == "True"
    assert conditions["Stalled"]["status"] == "True"
    assert status["observedGeneration"] == 2
    assert (status["url"], status["model"], status["selector"]) == (
        good["url"],
        good["model"],
        good["selector"],
    )


def test_long_messages_are_clipped() -> None:
    blocked = Blocked("InvalidSpec", "x" * 10_000)
    status = compute_status(Observation(1, blocked=blocked), None, "T")
    assert len(_conditions(status)["Ready"]["message"]) == 4096


@pytest.mark.parametrize(
    ("observation", "expected"),
    [
        (Observation(2, deployment=READY_DEPLOYMENT), "Current"),
        (Observation(3, deployment=ROLLING_DEPLOYMENT), "InProgress"),
        (Observation(2, blocked=Blocked("InvalidSpec", "bad")), "Failed"),
    ],
    ids=["ready", "rolling", "invalid"],
)
def test_kstatus_reads_the_conditions(observation: Observation, expected: str) -> None:
    obj = {
        "metadata": {"generation": observation.generation},
        "status": compute_status(observation, None, "T"),
    }
    assert kstatus(obj) == expected


def test_kstatus_waits_for_the_generation() -> None:
    obj = {
        "metadata": {"generation": 3},
        "status": compute_status(Observation(2, deployment=READY_DEPLOYMENT), None, "T"),
    }
    assert kstatus(obj) == "InProgress"


def test_kubectl_wait_finds_ready_true() -> None:
    status = compute_status(Observation(2, deployment=READY_DEPLOYMENT), None, "T")
    # kubectl wait --for=condition=Ready: a condition of that type with status "True".
    assert [c["status"] for c in status["conditions"] if c["type"] == "Ready"] == ["True"]


def test_status_fits_the_api_model_and_the_crd_schema() -> None:
    facts = desired_facts(_md())
    for observation in (
        Observation(2, deployment=READY_DEPLOYMENT, **facts),
        Observation(3, deployment=ROLLING_DEPLOYMENT, **facts),
        Observation(2, blocked=Blocked("InvalidSpec", "bad")),
    ):
        status = compute_status(observation, None, "2026-05-01T10:00:00Z")
        parsed = ModelDeploymentStatus.model_validate(status)
        assert parsed.model_dump(by_alias=True, exclude_none=True) == status
        schema = build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        jsonschema.validate(status, _no_extra(schema["properties"]["status"]))


def _no_extra(schema: dict[str, Any]) -> dict[str, Any]:
    """The structural schema with unknown fields refused (the API server would prune them)."""
    result = {key: value for key, value in schema.items() if not key.startswith("x-kubernetes")}
    if "properties" in result:
        result["properties"] = {
            key: _no_extra(value) for key, value in result["properties"].items()
        }
        result["additionalProperties"] = False
    if "items" in result:
        result["items"] = _no_extra(result["items"])
    return result


def test_autoscaled_is_not_ready_below_min_replicas() -> None:
    """The Deployment starts at 1 replica (Ferry leaves the count to the HPA); until the HPA's
    first sync raises it to minReplicas, the ModelDeployment is not Ready (seen on a real
    cluster: Ready with 1 of minReplicas 2)."""
    counts = {"replicas": 1, "updatedReplicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    one_of_one = {  # the count is the HPA's: no spec.replicas, so the Deployment runs 1
        **READY_DEPLOYMENT,
        "spec": {},
        "status": {"observedGeneration": 2, **counts},
    }
    status = compute_status(Observation(2, deployment=one_of_one, min_replicas=2), None, "T")
    assert _conditions(status)["Ready"]["status"] == "False"
    ready = compute_status(Observation(2, deployment=one_of_one, min_replicas=1), None, "T")
    assert _conditions(ready)["Ready"]["status"] == "True"

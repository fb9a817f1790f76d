"""The operator end to end against kmock: create, update, prune, delete, drift, invalid specs.

kmock stores and streams objects; it does not emulate server-side apply merging, garbage
collection or controllers. These tests check what the operator *sends* and how it reacts to
what it sees, not what a real API server would make of it (that is the e2e suite's job).
"""

from __future__ import annotations

import asyncio
from typing import Any

from ferry_operator import constants

MD = f"{constants.GROUP}/{constants.VERSION}/{constants.PLURAL}"
MD_PATH = f"/apis/{constants.GROUP}/{constants.VERSION}/namespaces/default/{constants.PLURAL}/mlp"
DEPLOYMENT_PATH = "/apis/apps/v1/namespaces/default/deployments/mlp"
SERVICE_PATH = "/api/v1/namespaces/default/services/mlp"


def status_of(kube: Any, name: str = "mlp") -> dict[str, Any]:
    return (kube.object(MD, "default", name) or {}).get("status") or {}


def ready_reason(kube: Any, name: str = "mlp") -> str | None:
    for condition in status_of(kube, name).get("conditions") or ():
        if condition["type"] == "Ready":
            return str(condition["reason"])
    return None


async def converged(kube: Any, generation: int, name: str = "mlp") -> None:
    await kube.wait_for(lambda: status_of(kube, name).get("observedGeneration") == generation)


async def settle(kube: Any, running: Any) -> None:
    """Wait until the operator has nothing queued or in progress."""
    await kube.wait_for(lambda: running.operator.controller.queue.depth == 0)
    await asyncio.wait_for(running.operator.controller.queue.join(), 10)


async def test_create_applies_children_with_server_side_apply(kube: Any) -> None:
    async with kube.operator() as running:
        md = await kube.create_md(kube.example())
        await converged(kube, 1)
        await settle(kube, running)
    writes = kube.writes()
    applies = [w for w in writes if w.content_type == "application/apply-patch+yaml"]
    assert sorted(w.path for w in applies) == [SERVICE_PATH, DEPLOYMENT_PATH]
    for apply in applies:
        assert apply.method == "PATCH"
        assert apply.params == {"fieldManager": "ferry-operator", "force": "true"}
        owner = apply.data["metadata"]["ownerReferences"]
        assert owner == [
            {
                "apiVersion": "serving.ferry.dev/v1alpha1",
                "kind": "ModelDeployment",
                "name": "mlp",
                "uid": md["metadata"]["uid"],
                "controller": True,
                "blockOwnerDeletion": True,
            }
        ]
        assert apply.data["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "ferry"
        annotations = apply.data["metadata"]["annotations"]
        assert "serving.ferry.dev/applied-hash" in annotations
        assert not any("kopf" in key or "last-handled" in key for key in annotations)
    status_writes = [w for w in writes if w.path == MD_PATH + "/status"]
    assert len(status_writes) == 1
    assert status_writes[0].content_type == "application/merge-patch+json"
    # The user's object is never written, and the create itself was the test's only POST.
    assert [w for w in writes if w.path == MD_PATH] == []
    assert len(writes) == 1 + 2 + 1
    deployment = kube.object("apps/v1/deployments", "default", "mlp")
    assert (
        deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        == "registry.test/ferry-runtime:test"
    )
    status = status_of(kube)
    assert status["url"] == {"rest": "http://mlp.default.svc:8080", "grpc": "mlp.default.svc:8081"}
    assert ready_reason(kube) == "RolloutInProgress"
    assert not any(
        "kopf" in key
        for key in kube.object(MD, "default", "mlp")["metadata"].get("annotations", {})
    )


async def test_spec_changes_reach_the_children_and_removed_ones_are_pruned(kube: Any) -> None:
    async with kube.operator() as running:
        md = await kube.create_md(kube.example())
        await converged(kube, 1)
        await kube.patch(MD_PATH, {"spec": {"replicas": 3}})
        await converged(kube, 2)
        assert kube.object("apps/v1/deployments", "default", "mlp")["spec"]["replicas"] == 3
        await kube.wait_for(lambda: kube.names("policy/v1/poddisruptionbudgets") == ["mlp"])

        await kube.patch(MD_PATH, {"spec": {"autoscaling": {"minReplicas": 2, "maxReplicas": 4}}})
        await converged(kube, 3)
        await kube.wait_for(
            lambda: kube.names("autoscaling/v2/horizontalpodautoscalers") == ["mlp"]
        )
        last_deployment_apply = [w for w in kube.writes() if w.path == DEPLOYMENT_PATH][-1]
        assert "replicas" not in last_deployment_apply.data["spec"]  # the HPA owns the count

        mark = kube.mark()
        await kube.patch(MD_PATH, {"spec": {"autoscaling": None, "replicas": 1}})
        await converged(kube, 4)
        await kube.wait_for(lambda: kube.names("autoscaling/v2/horizontalpodautoscalers") == [])
        await kube.wait_for(lambda: kube.names("policy/v1/poddisruptionbudgets") == [])
        await settle(kube, running)
    deletes = [w for w in kube.writes(mark) if w.method == "DELETE"]
    assert sorted(w.path for w in deletes) == [
        "/apis/autoscaling/v2/namespaces/default/horizontalpodautoscalers/mlp",
        "/apis/policy/v1/namespaces/default/poddisruptionbudgets/mlp",
    ]
    for delete in deletes:
        assert delete.data["preconditions"]["uid"]
        assert delete.data["propagationPolicy"] == "Background"
    assert md["metadata"]["uid"]


async def test_a_deleted_model_deployment_is_left_to_garbage_collection(kube: Any) -> None:
    async with kube.operator() as running:
        await kube.create_md(kube.example())
        await converged(kube, 1)
        await settle(kube, running)
        await kube.delete(MD_PATH)
        await kube.wait_for(lambda: kube.object(MD, "default", "mlp") is None)
        mark = kube.mark()
        # Child events keep arriving (here: a status change); nothing is re-created or written.
        await kube.request(
            "PATCH",
            DEPLOYMENT_PATH + "/status",
            {"status": {"replicas": 1}},
            "application/merge-patch+json",
        )
        await asyncio.sleep(0.3)
        await settle(kube, running)
    assert kube.writes(mark)[1:] == []


async def test_a_child_deleted_by_hand_is_restored(kube: Any) -> None:
    async with kube.operator() as running:
        await kube.create_md(kube.example())
        await converged(kube, 1)
        await settle(kube, running)
        await kube.delete(SERVICE_PATH)
        await kube.wait_for(lambda: kube.names("v1/services") == ["mlp"])
        await settle(kube, running)
    assert (
        kube.object("v1/services", "default", "mlp")["metadata"]["labels"][
            "app.kubernetes.io/managed-by"
        ]
        == "ferry"
    )


async def test_a_child_edited_by_hand_is_restored(kube: Any) -> None:
    async with kube.operator() as running:
        await kube.create_md(kube.example())
        await converged(kube, 1)
        await settle(kube, running)
        deployment = kube.object("apps/v1/deployments", "default", "mlp")
        fields = deployment["metadata"]["managedFields"][0]["fieldsV1"]
        del fields["f:spec"]["f:replicas"]
        # `kubectl scale deployment mlp --replicas=7` as a real API server records it: the new
        # value, and replicas owned by kubectl instead of Ferry.
        await kube.patch(
            DEPLOYMENT_PATH,
            {
                "spec": {"replicas": 7},
                "metadata": {
                    "managedFields": [
                        {**deployment["metadata"]["managedFields"][0], "fieldsV1": fields},
                        {
                            "manager": "kubectl",
                            "operation": "Update",
                            "fieldsV1": {"f:spec": {"f:replicas": {}}},
                        },
                    ]
                },
            },
        )
        await kube.wait_for(
            lambda: kube.object("apps/v1/deployments", "default", "mlp")["spec"]["replicas"] == 1
        )
        await settle(kube, running)


async def test_an_invalid_spec_is_reported_once_and_left_alone(kube: Any) -> None:
    body = kube.example()
    body["spec"]["rollout"] = {"maxSurge": 0, "maxUnavailable": 0}
    async with kube.operator() as running:
        await kube.create_md(body)
        await converged(kube, 1)
        await settle(kube, running)
        mark = kube.mark()
        await asyncio.sleep(0.5)
        # An unrelated event for the object does not bring the same report again.
        await kube.request(
            "PATCH",
            MD_PATH,
            {"metadata": {"labels": {"team": "a"}}},
            "application/merge-patch+json",
        )
        await asyncio.sleep(0.3)
        await settle(kube, running)
    assert ready_reason(kube) == "InvalidRollout"
    assert kube.names("apps/v1/deployments") == []
    events = [w for w in kube.writes() if w.path.endswith("/events")]
    assert len(events) == 1
    assert events[0].data["type"] == "Warning"
    assert events[0].data["reason"] == "InvalidRollout"
    assert "spec.rollout" in events[0].data["message"]
    assert kube.writes(mark)[1:] == []  # only the test's own label patch

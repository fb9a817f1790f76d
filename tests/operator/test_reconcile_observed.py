"""The operator's view: snapshots, owner mapping and read-your-writes."""

from __future__ import annotations

from typing import Any

from ferry_operator.observed import (
    APPLIED_HASH_ANNOTATION,
    ClusterView,
    Overlay,
    instance_key,
    owner_key,
    resource_version_reached,
    trim_child,
    trim_owner,
    trim_pod,
)

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "mlp",
        "namespace": "default",
        "uid": "d-1",
        "resourceVersion": "10",
        "generation": 2,
        "labels": {"serving.ferry.dev/model-deployment": "mlp"},
        "annotations": {APPLIED_HASH_ANNOTATION: "h", "deployment.kubernetes.io/revision": "2"},
        "ownerReferences": [
            {
                "apiVersion": "serving.ferry.dev/v1alpha1",
                "kind": "ModelDeployment",
                "name": "mlp",
                "uid": "u",
                "controller": True,
            }
        ],
        "managedFields": [
            {"manager": "ferry-operator", "operation": "Apply", "fieldsV1": {"f:spec": {}}},
            {
                "manager": "kube-controller-manager",
                "operation": "Update",
                "fieldsV1": {"f:status": {}},
            },
        ],
    },
    "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "big"}]}}},
    "status": {"observedGeneration": 2, "readyReplicas": 2},
}


def test_child_snapshot_keeps_what_the_reconciler_reads() -> None:
    snapshot = trim_child(DEPLOYMENT)
    assert snapshot["metadata"]["annotations"] == {APPLIED_HASH_ANNOTATION: "h"}
    assert [e["manager"] for e in snapshot["metadata"]["managedFields"]] == ["ferry-operator"]
    assert snapshot["spec"] == {"replicas": 2}
    assert snapshot["status"] == DEPLOYMENT["status"]
    service = trim_child({**DEPLOYMENT, "kind": "Service", "spec": {"ports": []}})
    assert "spec" not in service
    assert "status" not in service


def test_owner_and_pod_snapshots() -> None:
    owner = trim_owner(
        {
            "apiVersion": "v",
            "kind": "K",
            "metadata": {"name": "a", "managedFields": [1]},
            "spec": {"x": 1},
        }
    )
    assert owner == {
        "apiVersion": "v",
        "kind": "K",
        "metadata": {"name": "a"},
        "spec": {"x": 1},
        "status": {},
    }
    pod = trim_pod(
        {
            "metadata": {"name": "p", "namespace": "n"},
            "spec": {"containers": []},
            "status": {"phase": "Running", "podIP": "10.244.0.7", "hostIP": "1.2.3.4"},
        }
    )
    # The pod IP stays: canary analysis reads the pod's /metrics there.
    assert pod == {
        "metadata": {"name": "p", "namespace": "n"},
        "status": {"phase": "Running", "podIP": "10.244.0.7"},
    }


def test_owner_mapping() -> None:
    assert owner_key(DEPLOYMENT) == ("default", "mlp")
    assert instance_key(DEPLOYMENT) == ("default", "mlp")
    foreign = {
        **DEPLOYMENT,
        "metadata": {
            **DEPLOYMENT["metadata"],
            "ownerReferences": [{"kind": "ReplicaSet", "name": "x", "controller": True}],
        },
    }
    assert owner_key(foreign) is None


def test_resource_versions_compare_as_integers() -> None:
    assert resource_version_reached("11", "10")
    assert resource_version_reached("10", "10")
    assert not resource_version_reached("9", "10")
    assert not resource_version_reached("abc", "abd")
    assert resource_version_reached(None, "10")


def test_overlay_serves_own_write_until_the_watch_catches_up() -> None:
    overlay = Overlay()
    key = ("Deployment", "default", "mlp")
    written = {"metadata": {"resourceVersion": "12"}}
    indexed = {"metadata": {"resourceVersion": "10"}}
    overlay.wrote(key, written, ("default", "mlp"))
    assert overlay.resolve(key, indexed) is written
    overlay.observed(key, "11", gone=False)  # an older event still in flight
    assert overlay.resolve(key, indexed) is written
    overlay.observed(key, "12", gone=False)
    assert overlay.resolve(key, indexed) is indexed
    assert len(overlay) == 0


def test_overlay_forgets_a_write_when_the_object_is_deleted() -> None:
    overlay = Overlay()
    key = ("Deployment", "default", "mlp")
    overlay.wrote(key, {"metadata": {"resourceVersion": "12"}}, None)
    overlay.observed(key, "13", gone=True)
    assert overlay.resolve(key, None) is None


def test_overlay_hides_a_child_ferry_deleted() -> None:
    overlay = Overlay()
    key = ("HorizontalPodAutoscaler", "default", "mlp")
    overlay.deleted(key, ("default", "mlp"))
    assert overlay.resolve(key, {"metadata": {}}) is None
    overlay.observed(key, "20", gone=False)  # e.g. the deletionTimestamp update
    assert overlay.resolve(key, {"metadata": {}}) is None
    overlay.observed(key, "21", gone=True)
    assert len(overlay) == 0


def test_view_merges_indexes_and_overlay() -> None:
    view = ClusterView()
    service = trim_child({**DEPLOYMENT, "kind": "Service"})
    view.bind(
        owners={("default", "mlp"): [{"metadata": {"name": "mlp"}}]},
        owner_labels={("default", "mlp"): ["mlp"]},
        children=[{("default", "mlp"): [trim_child(DEPLOYMENT)]}, {("default", "mlp"): [service]}],
        pods={("default", "mlp"): [{"metadata": {"name": "p"}}]},
    )
    new_hpa = trim_child({**DEPLOYMENT, "kind": "HorizontalPodAutoscaler"})
    view.overlay.wrote(("HorizontalPodAutoscaler", "default", "mlp"), new_hpa, ("default", "mlp"))
    view.overlay.deleted(("Service", "default", "mlp"), ("default", "mlp"))
    kinds = sorted(child["kind"] for child in view.children(("default", "mlp")))
    assert kinds == ["Deployment", "HorizontalPodAutoscaler"]
    assert view.owner_for_instance(("default", "mlp")) == ("default", "mlp")
    assert view.owner_for_instance(("default", "other")) is None
    assert view.pods(("default", "mlp")) == [{"metadata": {"name": "p"}}]
    assert view.owner(("default", "nope")) is None

"""managedFields: which applied fields Ferry still owns (drift detection)."""

from __future__ import annotations

from typing import Any

from ferry_operator.ownership import applied_fields, missing_fields

SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "mlp",
        "namespace": "default",
        "labels": {"app.kubernetes.io/managed-by": "ferry"},
        "ownerReferences": [
            {
                "apiVersion": "serving.ferry.dev/v1alpha1",
                "kind": "ModelDeployment",
                "name": "mlp",
                "uid": "u-1",
                "controller": True,
            }
        ],
    },
    "spec": {
        "type": "ClusterIP",
        "selector": {"app.kubernetes.io/instance": "mlp"},
        "ports": [
            {"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"},
            {"name": "grpc", "port": 8081, "targetPort": "grpc"},
        ],
    },
}

# The shape kube-apiserver records for the apply above: no name/namespace (stripped), the
# Service selector atomic (a leaf), ports keyed by port+protocol with the defaulted protocol.
SERVICE_FIELDS: dict[str, Any] = {
    "f:metadata": {
        "f:labels": {"f:app.kubernetes.io/managed-by": {}},
        "f:ownerReferences": {
            'k:{"uid":"u-1"}': {
                ".": {},
                "f:apiVersion": {},
                "f:kind": {},
                "f:name": {},
                "f:uid": {},
                "f:controller": {},
            }
        },
    },
    "f:spec": {
        "f:type": {},
        "f:selector": {},
        "f:ports": {
            'k:{"port":8080,"protocol":"TCP"}': {
                ".": {},
                "f:name": {},
                "f:port": {},
                "f:targetPort": {},
                "f:protocol": {},
            },
            'k:{"port":8081,"protocol":"TCP"}': {
                ".": {},
                "f:name": {},
                "f:port": {},
                "f:targetPort": {},
            },
        },
    },
}


def _without(fields: dict[str, Any], *path: str) -> dict[str, Any]:
    import copy

    result = copy.deepcopy(fields)
    node = result
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return result


def test_fully_owned_manifest_has_no_drift() -> None:
    assert missing_fields(SERVICE, SERVICE_FIELDS) == []


def test_a_field_taken_by_another_manager_is_drift() -> None:
    fields = _without(SERVICE_FIELDS, "f:spec", "f:type")
    assert missing_fields(SERVICE, fields) == ["spec.type"]


def test_a_list_item_taken_over_is_drift() -> None:
    fields = _without(SERVICE_FIELDS, "f:spec", "f:ports", 'k:{"port":8081,"protocol":"TCP"}')
    assert missing_fields(SERVICE, fields) == ["spec.ports[1]"]


def test_a_field_inside_a_list_item_taken_over_is_drift() -> None:
    fields = _without(
        SERVICE_FIELDS, "f:spec", "f:ports", 'k:{"port":8080,"protocol":"TCP"}', "f:targetPort"
    )
    assert missing_fields(SERVICE, fields) == ["spec.ports[0].targetPort"]


def test_a_lost_owner_reference_is_drift() -> None:
    fields = _without(SERVICE_FIELDS, "f:metadata", "f:ownerReferences")
    assert missing_fields(SERVICE, fields) == ["metadata.ownerReferences"]


def test_atomic_values_are_owned_whole() -> None:
    deployment = {
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"tolerations": [{"key": "k", "operator": "Exists"}]}},
        }
    }
    fields = {"f:spec": {"f:selector": {}, "f:template": {"f:spec": {"f:tolerations": {}}}}}
    assert missing_fields(deployment, fields) == []


def test_set_items_are_matched_by_value() -> None:
    manifest = {"metadata": {"finalizers": ["a", "b"]}}
    assert (
        missing_fields(manifest, {"f:metadata": {"f:finalizers": {'v:"a"': {}, 'v:"b"': {}}}}) == []
    )
    assert missing_fields(manifest, {"f:metadata": {"f:finalizers": {'v:"a"': {}}}}) == [
        "metadata.finalizers[1]"
    ]


def test_empty_values_and_identity_metadata_are_not_required() -> None:
    manifest = {
        "metadata": {"name": "x", "namespace": "y", "annotations": {}},
        "spec": {"emptyDir": {}, "args": [], "x": None},
    }
    assert missing_fields(manifest, {}) == []


def test_applied_fields_reads_only_ferrys_apply_entry() -> None:
    managed = [
        {"manager": "ferry-operator", "operation": "Update", "fieldsV1": {"f:a": {}}},
        {
            "manager": "kube-controller-manager",
            "operation": "Update",
            "subresource": "status",
            "fieldsV1": {"f:status": {}},
        },
        {
            "manager": "ferry-operator",
            "operation": "Apply",
            "subresource": "status",
            "fieldsV1": {"f:status": {}},
        },
        {"manager": "ferry-operator", "operation": "Apply", "fieldsV1": {"f:spec": {}}},
    ]
    assert applied_fields(managed, "ferry-operator") == {"f:spec": {}}
    assert applied_fields(managed[:3], "ferry-operator") is None
    assert applied_fields(None, "ferry-operator") is None


def test_missing_fields_reports_at_most_the_limit() -> None:
    manifest = {"spec": {f"k{i}": i for i in range(20)}}
    assert len(missing_fields(manifest, {"f:spec": {"f:other": {}}}, limit=3)) == 3

"""cluster.py: request shapes, errors, authentication refresh, permissions."""

from __future__ import annotations

import socket
from typing import Any

import kopf
import pytest
from ferry_operator import constants
from ferry_operator.cluster import (
    REQUIRED_PERMISSIONS,
    Cluster,
    Connection,
    covered,
    describe_request,
    required_permissions,
)
from ferry_operator.errors import ApiError
from ferry_operator.reconcile import ChildRef

SERVICE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {
        "name": "mlp",
        "namespace": "default",
        "labels": {"app.kubernetes.io/managed-by": "ferry"},
    },
    "spec": {"ports": [{"name": "http", "port": 8080}]},
}


def connection_to(kube: Any, login_calls: list[int] | None = None) -> Connection:
    url = str(kube.server.url).rstrip("/")

    def login() -> kopf.ConnectionInfo:
        if login_calls is not None:
            login_calls.append(1)
        return kopf.ConnectionInfo(server=url, token=f"token-{len(login_calls or [])}")

    return Connection(login, request_timeout_s=5)


@pytest.mark.parametrize(
    ("method", "path", "query", "content_type", "expected"),
    [
        (
            "GET",
            "/apis/apps/v1/deployments",
            {"watch": "true"},
            "",
            (("watch",), "apps", "deployments", None, None),
        ),
        ("GET", "/api/v1/namespaces/a/pods", {}, "", (("list",), "", "pods", "a", None)),
        ("GET", "/api/v1/namespaces/a/pods/p", {}, "", (("get",), "", "pods", "a", "p")),
        (
            "POST",
            "/api/v1/namespaces/a/events",
            {},
            "application/json",
            (("create",), "", "events", "a", None),
        ),
        (
            "PATCH",
            "/apis/apps/v1/namespaces/a/deployments/d",
            {},
            "application/apply-patch+yaml",
            (("patch", "create"), "apps", "deployments", "a", "d"),
        ),
        (
            "PATCH",
            "/apis/serving.ferry.dev/v1alpha1/namespaces/a/modeldeployments/m/status",
            {},
            "application/merge-patch+json",
            (("patch",), "serving.ferry.dev", "modeldeployments/status", "a", "m"),
        ),
        (
            "DELETE",
            "/apis/policy/v1/namespaces/a/poddisruptionbudgets/p",
            {},
            "",
            (("delete",), "policy", "poddisruptionbudgets", "a", "p"),
        ),
        (
            "PATCH",
            "/apis/kopf.dev/v1/clusterkopfpeerings/ferry",
            {},
            "application/merge-patch+json",
            (("patch",), "kopf.dev", "clusterkopfpeerings", None, "ferry"),
        ),
        ("GET", "/api/v1/namespaces", {}, "", (("list",), "", "namespaces", None, None)),
    ],
)
def test_requests_map_to_authorization_attributes(
    method: str, path: str, query: dict[str, str], content_type: str, expected: tuple[Any, ...]
) -> None:
    request = describe_request(method, path, query, content_type)
    assert request is not None
    assert (
        request.verbs,
        request.api_group,
        request.resource,
        request.namespace,
        request.name,
    ) == expected


def test_discovery_is_not_a_resource_request() -> None:
    for path in ("/api", "/apis", "/api/v1", "/apis/apps/v1", "/version"):
        assert describe_request("GET", path, {}) is None


def test_permissions_per_mode() -> None:
    def names(permissions: tuple[Any, ...]) -> set[str]:
        return {p.resource for p in permissions}

    everywhere = names(required_permissions(clusterwide=True, standalone=True))
    assert "namespaces" not in everywhere
    assert "clusterkopfpeerings" not in everywhere
    assert {
        "modeldeployments",
        "modeldeployments/status",
        "deployments",
        "services",
        "pods",
        "events",
        "customresourcedefinitions",
    } <= everywhere
    assert "namespaces" in names(required_permissions(clusterwide=False, standalone=True))
    assert "clusterkopfpeerings" in names(required_permissions(clusterwide=True, standalone=False))
    namespaced_ha = names(required_permissions(clusterwide=False, standalone=False))
    assert "kopfpeerings" in namespaced_ha
    assert "clusterkopfpeerings" not in namespaced_ha
    assert all(
        p.verbs and "*" not in p.verbs and p.resource != "secrets" for p in REQUIRED_PERMISSIONS
    )
    assert {p.resource for p in REQUIRED_PERMISSIONS if p.cluster_scoped} == {
        "customresourcedefinitions",
        "namespaces",
        "clusterkopfpeerings",
    }


def test_the_operator_never_writes_model_deployment_specs() -> None:
    spec_write = describe_request(
        "PATCH",
        f"/apis/{constants.GROUP}/{constants.VERSION}/namespaces/a/{constants.PLURAL}/m",
        {},
    )
    assert spec_write is not None
    assert not covered(spec_write, REQUIRED_PERMISSIONS)


async def test_apply_is_a_forced_server_side_apply(kube: Any) -> None:
    connection = connection_to(kube)
    await connection.open()
    try:
        stored = await Cluster(connection).apply(SERVICE)
    finally:
        await connection.close()
    assert stored["metadata"]["name"] == "mlp"
    (request,) = kube.writes()
    assert request.method == "PATCH"
    assert request.path == "/api/v1/namespaces/default/services/mlp"
    assert request.content_type == "application/apply-patch+yaml"
    assert request.params == {"fieldManager": "ferry-operator", "force": "true"}
    assert request.data == SERVICE


async def test_status_goes_to_the_status_subresource(kube: Any) -> None:
    md = await kube.create_md(kube.example())
    connection = connection_to(kube)
    await connection.open()
    try:
        await Cluster(connection).patch_status("default", "mlp", {"observedGeneration": 1})
    finally:
        await connection.close()
    request = kube.writes()[-1]
    name = md["metadata"]["name"]
    assert (
        request.path
        == f"/apis/serving.ferry.dev/v1alpha1/namespaces/default/modeldeployments/{name}/status"
    )
    assert request.content_type == "application/merge-patch+json"
    assert request.data == {"status": {"observedGeneration": 1}}


async def test_delete_names_the_uid_and_tolerates_absence(kube: Any) -> None:
    connection = connection_to(kube)
    await connection.open()
    cluster = Cluster(connection)
    try:
        await cluster.apply(SERVICE)
        child = ChildRef("v1", "Service", "default", "mlp", "uid-1")
        await cluster.delete(child)
        await cluster.delete(child)  # gone already: fine
    finally:
        await connection.close()
    deletes = [r for r in kube.writes() if r.method == "DELETE"]
    assert len(deletes) == 2
    assert deletes[0].data == {
        "apiVersion": "v1",
        "kind": "DeleteOptions",
        "propagationPolicy": "Background",
        "preconditions": {"uid": "uid-1"},
    }


async def test_errors_carry_status_and_retry_after(kube: Any) -> None:
    kube.server.fail("PATCH", "/services/", 429, headers={"Retry-After": "7"})
    kube.server.fail("PATCH", "/services/", 422)
    connection = connection_to(kube)
    await connection.open()
    cluster = Cluster(connection)
    try:
        with pytest.raises(ApiError) as throttled:
            await cluster.apply(SERVICE)
        with pytest.raises(ApiError) as refused:
            await cluster.apply(SERVICE)
    finally:
        await connection.close()
    assert (throttled.value.status, throttled.value.retry_after, throttled.value.transient) == (
        429,
        7.0,
        True,
    )
    assert (refused.value.status, refused.value.transient) == (422, False)
    assert "injected 422" in str(refused.value)


async def test_a_401_logs_in_again_and_retries_once(kube: Any) -> None:
    kube.server.fail("PATCH", "/services/", 401)
    logins: list[int] = []
    connection = connection_to(kube, logins)
    await connection.open()
    try:
        stored = await Cluster(connection).apply(SERVICE)
    finally:
        await connection.close()
    assert stored["metadata"]["name"] == "mlp"
    assert len(logins) == 2
    assert [r.method for r in kube.sent()] == ["PATCH", "PATCH"]
    assert connection.stats.writes == 2  # the refused request and its retry


async def test_unreachable_server_is_a_transient_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    connection = Connection(
        lambda: kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"), request_timeout_s=2
    )
    await connection.open()
    try:
        with pytest.raises(ApiError) as error:
            await Cluster(connection).apply(SERVICE)
    finally:
        await connection.close()
    assert error.value.status == 0
    assert error.value.transient


async def test_peering_object_is_created_once(kube: Any) -> None:
    kube.server.resources["kopf.dev/v1/clusterkopfpeerings"] = kube.server.resources[
        "v1/namespaces"
    ]
    connection = connection_to(kube)
    await connection.open()
    try:
        await Cluster(connection).ensure_peering("ferry", None)
        await Cluster(connection).ensure_peering("ferry", None)  # 409 the second time: fine
    finally:
        await connection.close()
    assert kube.names("kopf.dev/v1/clusterkopfpeerings") == ["ferry"]

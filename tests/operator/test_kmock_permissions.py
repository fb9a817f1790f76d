"""Every request the operator sends (Kopf's included) is covered by REQUIRED_PERMISSIONS.

This is how the RBAC is derived from the code: the flows below exercise every kind of request
(lists, watches, applies that create and update, prunes, status patches, events, peering), the
fake API server records each one, and each must be allowed by :func:`required_permissions` for
the mode it ran in. The Helm chart's rules are generated from the same list.
"""

from __future__ import annotations

import asyncio
from typing import Any

import kopf
import pytest
from ferry_operator import constants
from ferry_operator.cluster import Permission, covered, describe_request, required_permissions
from ferry_operator.errors import ApiError
from ferry_operator.handlers import Operator

MD = f"{constants.GROUP}/{constants.VERSION}/{constants.PLURAL}"


async def exercise(kube: Any, namespace: str = "default") -> None:
    """Create, update (HPA and PDB appear), shrink (they are pruned), an invalid spec (Event)."""
    path = f"/apis/{constants.GROUP}/{constants.VERSION}/namespaces/{namespace}/{constants.PLURAL}"

    def generation(name: str) -> Any:
        return ((kube.object(MD, namespace, name) or {}).get("status") or {}).get(
            "observedGeneration"
        )

    await kube.create_md(kube.example("modeldeployment-autoscaling.yaml", namespace=namespace))
    name = kube.example("modeldeployment-autoscaling.yaml")["metadata"]["name"]
    await kube.wait_for(lambda: generation(name) == 1)
    await kube.patch(f"{path}/{name}", {"spec": {"autoscaling": None, "replicas": 1}})
    await kube.wait_for(lambda: generation(name) == 2)
    await kube.wait_for(lambda: kube.names("autoscaling/v2/horizontalpodautoscalers") == [])
    invalid = kube.example(namespace=namespace)
    invalid["metadata"]["name"] = "invalid"
    invalid["spec"]["replicas"] = -1
    await kube.create_md(invalid)
    await kube.wait_for(lambda: generation("invalid") == 1)


def uncovered(kube: Any, since: int, permissions: tuple[Permission, ...]) -> list[str]:
    problems = []
    for request in kube.sent(since):
        if not request.by_operator:
            continue
        described = describe_request(
            request.method, request.path, request.params, request.content_type
        )
        if described is not None and not covered(described, permissions):
            problems.append(f"{request.method} {request.path} {described.verbs}")
    return problems


def used(kube: Any, since: int) -> set[tuple[str, str, str]]:
    result = set()
    for request in kube.sent(since):
        if not request.by_operator:
            continue
        described = describe_request(
            request.method, request.path, request.params, request.content_type
        )
        if described is not None:
            result |= {(described.api_group, described.resource, verb) for verb in described.verbs}
    return result


async def test_all_namespaces_standalone(kube: Any) -> None:
    start = kube.mark()
    async with kube.operator(kube.settings(standalone=True)):
        await exercise(kube)
    mine = kube.mark()
    assert uncovered(kube, 0, required_permissions(clusterwide=True, standalone=True)) == []
    exercised = used(kube, start)
    for needed in [
        ("serving.ferry.dev", "modeldeployments", "watch"),
        ("serving.ferry.dev", "modeldeployments/status", "patch"),
        ("apps", "deployments", "create"),
        ("autoscaling", "horizontalpodautoscalers", "delete"),
        ("", "events", "create"),
        ("", "pods", "watch"),
        ("apiextensions.k8s.io", "customresourcedefinitions", "watch"),
    ]:
        assert needed in exercised
    assert mine > start


async def test_all_namespaces_with_peering(kube: Any) -> None:
    kube.server.resources["kopf.dev/v1/clusterkopfpeerings"] = kube.server.resources[
        "v1/namespaces"
    ].__class__(
        kind="ClusterKopfPeering", namespaced=False, verbs={"list", "watch", "patch", "create"}
    )
    async with kube.operator(kube.settings(standalone=False, peering_name="ferry")):
        await exercise(kube)
    assert kube.names("kopf.dev/v1/clusterkopfpeerings") == ["ferry"]
    exercised = used(kube, 0)
    assert ("kopf.dev", "clusterkopfpeerings", "create") in exercised
    assert ("kopf.dev", "clusterkopfpeerings", "patch") in exercised  # Kopf's keep-alive
    assert uncovered(kube, 0, required_permissions(clusterwide=True, standalone=False)) == []
    assert uncovered(kube, 0, required_permissions(clusterwide=True, standalone=True)) != []


async def test_without_the_peering_crd_it_warns_and_runs_standalone(
    kube: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Kopf's convention: a plain cluster (no kopf.dev CRD) gets a standalone operator."""
    kube.server.fail("POST", "/apis/kopf.dev/", 404)  # what an API server without the CRD says
    async with kube.operator(kube.settings(standalone=False)) as running:
        assert running.operator.settings.standalone
        await exercise(kube)
    assert any("NO PEERING" in record.getMessage() for record in caplog.records)
    peering = [(r.method, r.path) for r in kube.sent() if "kopf.dev" in r.path]
    assert peering == [("POST", "/apis/kopf.dev/v1/clusterkopfpeerings")]  # the probe, once
    assert uncovered(kube, 0, required_permissions(clusterwide=True, standalone=False)) == []


async def test_without_the_peering_crd_required_peering_refuses_to_start(kube: Any) -> None:
    kube.server.fail("POST", "/apis/kopf.dev/", 404)
    operator = Operator(
        kube.settings(standalone=False, require_peering=True),
        login=lambda: kopf.ConnectionInfo(server=str(kube.server.url).rstrip("/")),
        identity="test-operator",
    )
    with pytest.raises(ApiError, match="peering CRD"):
        await asyncio.wait_for(operator.run(stop_flag=asyncio.Event()), timeout=15)


async def test_some_namespaces_with_peering(kube: Any) -> None:
    kube.server.resources["kopf.dev/v1/kopfpeerings"] = kube.server.resources[
        "v1/namespaces"
    ].__class__(kind="KopfPeering", namespaced=True, verbs={"list", "watch", "patch", "create"})
    kube.server.namespaces.append("team-a")
    settings = kube.settings(standalone=False, watch_namespaces=("team-a",))
    async with kube.operator(settings):
        await exercise(kube, namespace="team-a")
    exercised = used(kube, 0)
    assert ("", "namespaces", "watch") in exercised
    assert ("kopf.dev", "kopfpeerings", "patch") in exercised
    assert uncovered(kube, 0, required_permissions(clusterwide=False, standalone=False)) == []
    requests = [
        r.path
        for r in kube.sent()
        if r.by_operator and "/namespaces/" in r.path and "/namespaces/team-a/" not in r.path
    ]
    assert requests == []  # nothing outside the watched namespace

"""A restart over unchanged objects makes no writes; an idle operator makes none either."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from ferry_operator import constants, handlers

MD = f"{constants.GROUP}/{constants.VERSION}/{constants.PLURAL}"


def observed(kube: Any, name: str) -> Any:
    return ((kube.object(MD, "default", name) or {}).get("status") or {}).get("observedGeneration")


async def make_ready(kube: Any, name: str) -> None:
    """Play the Deployment controller: report the rollout of ``name`` complete."""
    deployment = kube.object("apps/v1/deployments", "default", name)
    replicas = deployment["spec"].get("replicas", 1)
    status = {
        "observedGeneration": deployment["metadata"]["generation"],
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
    }
    await kube.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/default/deployments/{name}/status",
        {"status": status},
        "application/merge-patch+json",
    )


async def idle(kube: Any, running: Any, processed: int) -> None:
    controller = running.operator.controller
    await kube.wait_for(lambda: controller.queue.processed >= processed)
    await asyncio.wait_for(controller.queue.join(), 10)


async def test_restart_over_unchanged_objects_writes_nothing(
    kube: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = kube.example()
    scaled = kube.example("modeldeployment-autoscaling.yaml")
    scaled["metadata"]["name"] = "scaled"
    invalid = kube.example()
    invalid["metadata"]["name"] = "invalid"
    invalid["spec"]["rollout"] = {"maxSurge": 0, "maxUnavailable": 0}
    async with kube.operator() as running:
        for body in (plain, scaled, invalid):
            await kube.create_md(body)
        for name in ("mlp", "scaled", "invalid"):
            await kube.wait_for(lambda name=name: observed(kube, name) == 1)
        await make_ready(kube, "mlp")
        await kube.wait_for(
            lambda: any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in kube.object(MD, "default", "mlp")["status"]["conditions"]
            )
        )
        await idle(kube, running, 3)
        before_idle = kube.mark()
        await asyncio.sleep(0.5)
        assert kube.writes(before_idle) == []  # idle: no writes at all
    children = sorted(
        kube.names("apps/v1/deployments") + kube.names("autoscaling/v2/horizontalpodautoscalers")
    )
    assert children == ["mlp", "scaled", "scaled"]

    # Later: a status computed afresh must still carry the old transition times.
    monkeypatch.setattr(handlers, "utc_now", lambda: "2031-01-01T00:00:00Z")
    restart = kube.mark()
    async with kube.operator() as running:
        await idle(kube, running, 3)
        await asyncio.sleep(0.3)
        await asyncio.wait_for(running.operator.controller.queue.join(), 10)
        reads = kube.sent(restart)
    assert kube.writes(restart) == []
    assert all(r.method == "GET" for r in reads)
    assert running.operator.connection.stats.writes == 0

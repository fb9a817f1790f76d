"""Canary rollouts wired end to end against kmock: the operator reads the pods (through a fake
prober: kmock runs no pods), decides, applies, prunes and reports.

kmock runs no Deployment controller: the tests play it (:func:`make_ready`), and create the
canary's pods themselves.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping, Sequence
from typing import Any

import kmock
from ferry_operator import constants
from ferry_operator.analysis import Figures, Signature
from ferry_operator.probes import serving_pods
from ferry_operator.rollout_observed import ProbeRequest, Probes

MD = f"{constants.GROUP}/{constants.VERSION}/{constants.PLURAL}"
DEPLOYMENTS = "apps/v1/deployments"
EVENTS = "v1/events"
MD_PATH = f"/apis/{constants.GROUP}/{constants.VERSION}/namespaces/default/{constants.PLURAL}/mlp"
SIG = Signature.from_metadata(
    {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }
)
GOOD = Figures(requests=500, errors=0, buckets=((0.01, 500.0), (math.inf, 500.0)))
BROKEN = Figures(requests=500, errors=500, buckets=((0.01, 500.0), (math.inf, 500.0)))


class FakeProber:
    """Answers as runtime pods would, for pods that are ready and have an IP."""

    def __init__(self, figures: Figures) -> None:
        self.figures = figures
        self.asked: list[ProbeRequest] = []

    async def probe(
        self, key: tuple[str, str], request: ProbeRequest, pods: Sequence[Mapping[str, Any]]
    ) -> Probes:
        self.asked.append(request)
        figures = None
        if request.figures_of and serving_pods(pods, request.figures_of):
            figures = self.figures
        signatures = {r: SIG for r in request.signatures_of if serving_pods(pods, r)}
        return Probes(figures=figures, signatures=signatures)

    async def close(self) -> None:
        return None


def status_of(kube: Any) -> dict[str, Any]:
    return (kube.object(MD, "default", "mlp") or {}).get("status") or {}


def condition(kube: Any, kind: str) -> dict[str, Any]:
    for item in status_of(kube).get("conditions") or ():
        if item["type"] == kind:
            return dict(item)
    return {}


def replicas(kube: Any, name: str) -> int | None:
    deployment = kube.object(DEPLOYMENTS, "default", name)
    return None if deployment is None else deployment["spec"].get("replicas")


async def make_ready(kube: Any, name: str) -> None:
    """Play the Deployment controller: every replica of ``name`` updated and ready."""
    deployment = kube.object(DEPLOYMENTS, "default", name)
    count = deployment["spec"].get("replicas", 1)
    await kube.request(
        "PATCH",
        f"/apis/apps/v1/namespaces/default/deployments/{name}/status",
        {
            "status": {
                "observedGeneration": deployment["metadata"]["generation"],
                "replicas": count,
                "updatedReplicas": count,
                "readyReplicas": count,
                "availableReplicas": count,
            }
        },
        "application/merge-patch+json",
    )


async def add_ready_pod(kube: Any, name: str, revision: str, ip: str) -> None:
    """A ready model pod of ``revision`` (as its ReplicaSet would make it)."""
    labels = {
        constants.LABEL_NAME: constants.APP_NAME,
        constants.LABEL_INSTANCE: "mlp",
        constants.LABEL_MODEL_DEPLOYMENT: "mlp",
        constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
        constants.LABEL_REVISION: revision,
    }
    await kube.create(
        "v1/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "model-server", "image": "x"}]},
            "status": {
                "phase": "Running",
                "podIP": ip,
                "conditions": [
                    {"type": "PodScheduled", "status": "True"},
                    {"type": "Ready", "status": "True"},
                ],
            },
        },
    )


def canary_example(kube: Any) -> dict[str, Any]:
    body = kube.example()
    body["spec"]["replicas"] = 2
    body["spec"]["rollout"] = {
        "strategy": "Canary",
        "steps": [{"weight": 50, "pauseSeconds": 0}],
        "analysis": {"minRequests": 0, "maxErrorRatePercent": 1},
    }
    return body


async def start_canary(kube: Any, running: Any, figures: Figures) -> tuple[str, str, str]:
    """Serve revision 1, then ask for revision 2. Returns (stable, canary name, canary)."""
    prober = FakeProber(figures)
    running.operator.controller.prober = prober
    await kube.create_md(canary_example(kube))
    await kube.wait_for(lambda: kube.object(DEPLOYMENTS, "default", "mlp") is not None)
    await make_ready(kube, "mlp")
    await kube.wait_for(lambda: status_of(kube).get("rollout", {}).get("phase") == "Complete")
    stable = status_of(kube)["rollout"]["stableRevision"]
    await add_ready_pod(kube, "mlp-a", stable, "10.244.0.10")

    await kube.patch(MD_PATH, {"spec": {"model": {"version": "2"}}})
    await kube.wait_for(lambda: status_of(kube).get("rollout", {}).get("currentRevision") != stable)
    canary = status_of(kube)["rollout"]["currentRevision"]
    canary_name = f"mlp-{canary}"
    await kube.wait_for(lambda: replicas(kube, canary_name) == 1)
    assert replicas(kube, "mlp") == 2  # the stable keeps every replica until canary pods serve
    assert condition(kube, "Ready")["reason"] == "CanaryInProgress"
    assert condition(kube, "Progressing")["status"] == "True"
    assert prober.asked == []  # nothing to read before a canary pod is ready
    return stable, canary_name, canary


async def test_a_good_canary_is_promoted_and_the_stable_removed(kube: Any) -> None:
    async with kube.operator() as running:
        stable, canary_name, canary = await start_canary(kube, running, GOOD)
        await add_ready_pod(kube, "mlp-canary-a", canary, "10.244.0.11")
        await make_ready(kube, canary_name)
        # Signatures match, the step passes at once (no pause, no minimum): promotion.
        await kube.wait_for(lambda: status_of(kube)["rollout"]["phase"] == "Promoting")
        assert replicas(kube, canary_name) == 2
        assert replicas(kube, "mlp") == 1  # shrunk by the one canary pod that serves
        await make_ready(kube, canary_name)
        await kube.wait_for(lambda: kube.object(DEPLOYMENTS, "default", "mlp") is None)
        await kube.wait_for(lambda: status_of(kube)["rollout"]["phase"] == "Complete")
        status = status_of(kube)
        assert status["rollout"]["stableRevision"] == canary
        assert [(r["name"], r["outcome"]) for r in status["revisions"]] == [
            (canary, "Serving"),
            (stable, "Superseded"),
        ]
        assert condition(kube, "Ready")["status"] == "True"
        await kube.wait_for(
            lambda: (
                {"CanaryStep", "RolloutPromoted"}
                <= {
                    e["reason"]
                    for e in (kube.object(EVENTS, "default", n) for n in kube.names(EVENTS))
                }
            )
        )
    # The promoted revision kept its Deployment (its pods were never restarted).
    assert kube.object(DEPLOYMENTS, "default", canary_name) is not None
    prober = running.operator.controller.prober
    asked = next(r for r in prober.asked if r.signatures_of == (stable, canary))
    # Each revision is read where its own template serves it.
    assert asked.targets == {stable: ("mlp", 8080), canary: ("mlp", 8080)}


async def test_an_erroring_canary_is_aborted_and_stays_aborted(kube: Any) -> None:
    async with kube.operator() as running:
        _stable, canary_name, canary = await start_canary(kube, running, BROKEN)
        await add_ready_pod(kube, "mlp-canary-a", canary, "10.244.0.11")
        await make_ready(kube, canary_name)
        await kube.wait_for(lambda: status_of(kube)["rollout"]["phase"] == "Aborted")
        assert replicas(kube, canary_name) == 0
        assert replicas(kube, "mlp") == 2
        degraded = condition(kube, "Degraded")
        assert degraded["status"] == "True"
        assert degraded["reason"] == "RolloutAborted"
        assert "500 of 500 requests failed (100.00%, limit 1%)" in degraded["message"]
        assert condition(kube, "Stalled")["status"] == "True"
        status = status_of(kube)
        assert status["rollout"]["phase"] == "Aborted"
        assert status["revisions"][0]["outcome"] == "Aborted"
        # The spec was never touched.
        md = kube.object(MD, "default", "mlp")
        assert md["spec"]["model"]["version"] == "2"

        def warnings() -> list[str]:
            found = [kube.object(EVENTS, "default", n) for n in kube.names(EVENTS)]
            return [e["reason"] for e in found if e and e["type"] == "Warning"]

        await kube.wait_for(lambda: warnings() == ["RolloutAborted"])
        # Nothing more happens to the aborted canary.
        controller = running.operator.controller
        await kube.wait_for(lambda: controller.queue.depth == 0)
        await asyncio.wait_for(controller.queue.join(), 10)
        mark = kube.mark()
        await asyncio.sleep(0.3)
        assert [(w.path, w.data) for w in kube.writes(mark)] == []


async def add_failing_pod(kube: Any, name: str, revision: str) -> None:
    """A pod of ``revision`` whose model fetch fails (init container crash-looping)."""
    labels = {
        constants.LABEL_NAME: constants.APP_NAME,
        constants.LABEL_INSTANCE: "mlp",
        constants.LABEL_MODEL_DEPLOYMENT: "mlp",
        constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
        constants.LABEL_REVISION: revision,
    }
    await kube.create(
        "v1/pods",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"containers": [{"name": "model-server", "image": "x"}]},
            "status": {
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "initContainerStatuses": [
                    {
                        "name": "fetch-model",
                        "ready": False,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": 1, "message": "sha256 mismatch"}},
                    }
                ],
            },
        },
    )


async def test_a_rolling_update_that_never_gets_ready_is_rolled_back(kube: Any) -> None:
    def deployment() -> dict[str, Any]:
        return kube.object(DEPLOYMENTS, "default", "mlp") or {}

    def revision() -> str | None:
        return (deployment().get("metadata") or {}).get("labels", {}).get(constants.LABEL_REVISION)

    async with kube.operator():
        await kube.create_md(kube.example())
        await kube.wait_for(lambda: revision() is not None)
        good = revision()
        await make_ready(kube, "mlp")
        await kube.wait_for(lambda: status_of(kube).get("rollout", {}).get("phase") == "Complete")

        await kube.patch(MD_PATH, {"spec": {"model": {"version": "2"}}})
        await kube.wait_for(lambda: revision() != good)
        bad = revision()
        annotations = deployment()["metadata"]["annotations"]
        assert constants.ROLLBACK_TEMPLATE_ANNOTATION in annotations  # the way back, carried

        await add_failing_pod(kube, "mlp-new", str(bad))
        await kube.wait_for(lambda: revision() == good)
        await kube.wait_for(lambda: status_of(kube).get("rollout", {}).get("phase") == "Aborted")
        # (That the applied configuration drops the rollback annotation is server-side apply's
        # doing, which kmock does not emulate; test_rollout checks the decision.)
        degraded = condition(kube, "Degraded")
        assert degraded["reason"] == "RolloutAborted"
        assert "ModelLoadFailed" in degraded["message"]
        assert "sha256 mismatch" in degraded["message"]
        assert [(r["name"], r["outcome"]) for r in status_of(kube)["revisions"]] == [
            (bad, "Aborted"),
            (good, "Serving"),
        ]
        assert kube.object(MD, "default", "mlp")["spec"]["model"]["version"] == "2"


def gateway_example(kube: Any) -> dict[str, Any]:
    body = kube.example()
    body["spec"]["rollout"] = {"gateway": {"name": "edge", "namespace": "gateways"}}
    return body


async def test_a_gateway_without_the_gateway_api_is_refused_clearly(kube: Any) -> None:
    async with kube.operator():
        await kube.create_md(gateway_example(kube))
        await kube.wait_for(
            lambda: condition(kube, "Ready").get("reason") == "GatewayAPIUnavailable"
        )
    ready = condition(kube, "Ready")
    assert ready["status"] == "False"
    assert "Gateway 'edge'" in ready["message"]
    assert "HTTPRoute (gateway.networking.k8s.io/v1)" in ready["message"]
    assert condition(kube, "Stalled")["status"] == "True"
    assert kube.names(DEPLOYMENTS) == []  # nothing applied for a spec that cannot be served
    events = [kube.object(EVENTS, "default", n) for n in kube.names(EVENTS)]
    assert [e["reason"] for e in events if e] == ["GatewayAPIUnavailable"]


async def test_with_the_gateway_api_routes_and_revision_services_are_applied(kube: Any) -> None:
    for plural, kind in (("httproutes", "HTTPRoute"), ("grpcroutes", "GRPCRoute")):
        kube.server.resources[f"gateway.networking.k8s.io/v1/{plural}"] = kmock.ResourceInfo(
            kind=kind, namespaced=True, verbs={"list", "watch"}
        )
    async with kube.operator():
        await kube.create_md(gateway_example(kube))
        await kube.wait_for(
            lambda: (
                kube.object("gateway.networking.k8s.io/v1/grpcroutes", "default", "mlp") is not None
            )
        )
        await kube.wait_for(lambda: "currentRevision" in status_of(kube).get("rollout", {}))
        revision = status_of(kube)["rollout"]["currentRevision"]
    route = kube.object("gateway.networking.k8s.io/v1/httproutes", "default", "mlp")
    assert route["spec"]["parentRefs"][0]["name"] == "edge"
    [backend] = route["spec"]["rules"][0]["backendRefs"]
    assert backend["weight"] == 100
    assert backend["name"] == f"mlp-{revision}"
    service = kube.object("v1/services", "default", backend["name"])
    assert service["spec"]["selector"][constants.LABEL_REVISION] == revision

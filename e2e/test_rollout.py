"""Canary rollouts on a real cluster, under load (docs/rollouts.md):

1. a good canary is promoted through its steps with 0 failed requests;
2. a canary whose model fails every request is aborted within one analysis window, after which
   no request fails;
3. a canary whose pods never get ready never receives a request and is rolled back;

and status, printer columns and Events say what happened. One ModelDeployment goes through the
three in order (each starts from what the one before left serving).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import tarfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from e2e_examples import default_example, store_url
from e2e_kube import Kube, Operator, Settings, condition, ready_md, wait_for
from e2e_load import Load, LoadPlan, start_load
from e2e_manifests import model_store
from e2e_models import INPUT_FEATURES, ModelVersion
from e2e_reach import EndpointsReach, Reach
from torch import nn

NAME = "mlp-canary"
STEP_PAUSE_S = 20
STORE = "rollout-store"


class FailsOnRealInput(nn.Module):
    """Loads and warms up (the runtime warms up on zeros), then fails every real request."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x != 0).any()):
            raise RuntimeError("this model fails every request with real data")
        return torch.zeros(x.shape[0], 10)


def faulty_version(workdir: Path) -> ModelVersion:
    """Version "3": the example's signature, a model that errors on every request."""
    directory = workdir / "v3-faulty"
    directory.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated
        torch.jit.save(torch.jit.script(FailsOnRealInput()), str(directory / "model.pt"))
    signature = {
        "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [INPUT_FEATURES]}],
        "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": [10]}],
    }
    (directory / "model.json").write_text(json.dumps(signature))
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in ("model.pt", "model.json"):
            archive.add(directory / name, arcname=name)
    digest = hashlib.sha256((directory / "model.pt").read_bytes()).hexdigest()
    return ModelVersion("3", directory, buffer.getvalue(), digest)


def _renamed(value: Any) -> Any:
    """The suite's model store manifests as a second store (its own names and labels)."""
    if isinstance(value, dict):
        return {key: _renamed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_renamed(item) for item in value]
    if value == "model-store":
        return STORE
    if value == "model-store-files":
        return f"{STORE}-files"
    return value


@pytest.fixture(scope="module")
def faulty_store(
    kube: Kube,
    ns: str,
    *,
    settings: Settings,
    reach: Reach,
    pods_run: None,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[str, ModelVersion]:
    """A second model store serving the faulty model; (base URL for pods, the version)."""
    faulty = faulty_version(tmp_path_factory.mktemp("faulty"))
    kube.apply([_renamed(m) for m in model_store(ns, settings.runtime_image, [faulty])])
    wait_for(
        lambda: getattr(
            kube.apps.read_namespaced_deployment(STORE, ns).status, "ready_replicas", 0
        ),
        timeout=settings.timeout,
        what="the faulty model's store to serve",
    )
    if isinstance(reach, EndpointsReach):
        found = wait_for(
            lambda: reach.endpoints(kube, ns, STORE, 80),
            timeout=60,
            what="a ready endpoint of the faulty model's store",
            interval=0.5,
        )
        return f"http://{found[0].authority}", faulty
    return f"http://{STORE}.{ns}.svc.cluster.local", faulty


@pytest.fixture(scope="module")
def canary(
    kube: Kube,
    ns: str,
    *,
    ferry: Operator,
    store_base: str,
    store_ready: str,
    models: dict[str, ModelVersion],
    settings: Settings,
) -> Iterator[dict[str, Any]]:
    """The default example with two replicas and a one-step canary strategy, Ready on v1."""
    body = default_example(ns, store_base, models)
    body["metadata"]["name"] = NAME
    body["spec"]["replicas"] = 2
    body["spec"]["rollout"] = {
        "strategy": "Canary",
        "steps": [{"weight": 50, "pauseSeconds": STEP_PAUSE_S}],
        "analysis": {"maxErrorRatePercent": 1, "minRequests": 10},
    }
    kube.create_md(body)
    wait_for(
        lambda: ready_md(kube, ns, NAME),
        timeout=settings.timeout,
        what=f"{NAME} to be Ready on version 1",
        details=lambda: kube.describe(ns, NAME),
    )
    yield body
    kube.delete_md(ns, NAME)


def rollout(kube: Kube, ns: str) -> dict[str, Any]:
    return dict(((kube.get_md(ns, NAME) or {}).get("status") or {}).get("rollout") or {})


def revisions(kube: Kube, ns: str) -> list[dict[str, Any]]:
    return list(((kube.get_md(ns, NAME) or {}).get("status") or {}).get("revisions") or [])


def events(kube: Kube, ns: str) -> list[tuple[str, str, str]]:
    found = kube.core.list_namespaced_event(
        ns, field_selector=f"involvedObject.name={NAME},involvedObject.kind=ModelDeployment"
    ).items
    return [(str(e.type), str(e.reason), e.message or "") for e in found]


def printed(kube: Kube, ns: str) -> dict[str, str]:
    """``kubectl get md -o wide`` as column → value."""
    lines = kube.kubectl("-n", ns, "get", "md", NAME, "-o", "wide").stdout.splitlines()
    header, row = lines[0].split(), lines[1].split()
    return dict(zip(header, row, strict=False))


def deployments(kube: Kube, ns: str) -> dict[str, tuple[int, int]]:
    """Model Deployments by name: (spec replicas, ready replicas)."""
    return {
        d.metadata.name: (d.spec.replicas or 0, d.status.ready_replicas or 0)
        for d in kube.children(ns, NAME)["Deployment"]
    }


def load_plan(settings: Settings, expect_version: str | None) -> LoadPlan:
    return LoadPlan(
        service=NAME,
        port=8080,
        model=NAME,
        expect_version=expect_version,
        settle=10,
        max_seconds=settings.timeout + 300,
    )


def failures(load: Load) -> int:
    return int((load.progress() or {}).get("failures", 0))


def test_a_good_canary_is_promoted_with_no_failed_request(
    kube: Kube,
    ns: str,
    canary: dict[str, Any],
    *,
    reach: Reach,
    store_base: str,
    models: dict[str, ModelVersion],
    settings: Settings,
) -> None:
    stable = rollout(kube, ns)["stableRevision"]
    new_uri = store_url(store_base, models["2"].store_path)
    with start_load(
        kube, reach, settings, ns, load_plan(settings, "2"), pod_name="canary-load"
    ) as load:
        load.wait_sending()
        kube.patch_md(ns, NAME, {"spec": {"model": {"uri": new_uri, "version": "2"}}})
        wait_for(
            lambda: rollout(kube, ns).get("currentRevision") not in (None, stable),
            timeout=30,
            what="the new revision to be planned",
        )
        current = rollout(kube, ns)["currentRevision"]
        # While the canary step runs both revisions serve, the stable one shrunk by one pod.
        wait_for(
            lambda: (
                deployments(kube, ns) == {NAME: (1, 1), f"{NAME}-{current}": (1, 1)}
                and rollout(kube, ns).get("weight") == 50
            ),
            timeout=settings.timeout,
            what="the canary step at 50% of the ready replicas",
            details=lambda: f"{deployments(kube, ns)}\n{kube.describe(ns, NAME)}",
        )
        assert printed(kube, ns)["TRYING"] == current
        assert printed(kube, ns)["SERVING"] == stable
        # the object exists here (printed() just read it); get_md is Optional for other callers
        assert condition(kube.get_md(ns, NAME), "Ready")["reason"] in {  # type: ignore[index]
            "CanaryInProgress",
            "CanaryPaused",
        }
        wait_for(
            lambda: rollout(kube, ns).get("phase") == "Complete",
            timeout=settings.timeout + STEP_PAUSE_S,
            what="the canary to be promoted",
            details=lambda: f"{deployments(kube, ns)}\n{kube.describe(ns, NAME)}",
        )
        summary = load.summary(timeout=settings.timeout + 120)
    assert summary["failures"] == 0, summary["errors"]
    assert summary["versions"].get("1", 0) > 0, summary
    assert summary["versions"].get("2", 0) > 0, summary
    # The promoted canary kept its Deployment (its pods were not restarted); the old one is gone.
    wait_for(
        lambda: list(deployments(kube, ns)) == [f"{NAME}-{current}"],
        timeout=60,
        what="the stable Deployment to be removed",
    )
    assert rollout(kube, ns)["stableRevision"] == current
    assert [(r["name"], r["outcome"]) for r in revisions(kube, ns)][:2] == [
        (current, "Serving"),
        (stable, "Superseded"),
    ]
    assert condition(ready_md(kube, ns, NAME), "Ready") is not None
    reasons = {reason for _, reason, _ in events(kube, ns)}
    assert {"CanaryStep", "RolloutPromoted"} <= reasons
    assert printed(kube, ns)["SERVING"] == current


def _canary_endpoints(kube: Kube, ns: str, revision: str) -> int:
    pods = kube.pods(ns, f"serving.ferry.dev/revision={revision}")
    return sum(
        1
        for pod in pods
        if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or ())
    )


def test_an_erroring_canary_is_aborted_then_no_request_fails(
    kube: Kube,
    ns: str,
    canary: dict[str, Any],
    *,
    reach: Reach,
    faulty_store: tuple[str, ModelVersion],
    settings: Settings,
) -> None:
    base, faulty = faulty_store
    stable = rollout(kube, ns)["stableRevision"]
    with start_load(
        kube, reach, settings, ns, load_plan(settings, None), pod_name="faulty-load"
    ) as load:
        load.wait_sending()
        kube.patch_md(
            ns,
            NAME,
            {"spec": {"model": {"uri": store_url(base, faulty.store_path), "version": "3"}}},
        )
        wait_for(
            lambda: rollout(kube, ns).get("currentRevision") not in (None, stable),
            timeout=30,
            what="the faulty revision to be planned",
        )
        current = rollout(kube, ns)["currentRevision"]
        wait_for(
            lambda: _canary_endpoints(kube, ns, current) > 0,
            timeout=settings.timeout,
            what="the faulty canary's pod to be ready",
            details=lambda: kube.describe(ns, NAME),
        )
        serving_since = time.monotonic()
        wait_for(
            lambda: rollout(kube, ns).get("phase") == "Aborted",
            timeout=STEP_PAUSE_S + 30,
            what="the erroring canary to be aborted",
            details=lambda: kube.describe(ns, NAME),
        )
        # Within one analysis window: before the step's pause could have ended it.
        assert time.monotonic() - serving_since < STEP_PAUSE_S + 10
        wait_for(
            lambda: _canary_endpoints(kube, ns, current) == 0,
            timeout=60,
            what="the aborted canary's pods to leave the endpoints",
        )
        time.sleep(3)  # requests already on their way to a canary pod when it left
        failed_at_abort = failures(load)
        assert failed_at_abort > 0  # the canary did fail requests before it was stopped
        time.sleep(20)
        final = load.progress() or {}
    assert final.get("failures") == failed_at_abort, final
    md = kube.get_md(ns, NAME)
    degraded = condition(md, "Degraded")
    assert degraded is not None
    assert degraded["status"] == "True"
    assert degraded["reason"] == "RolloutAborted"
    assert "requests failed" in degraded["message"]
    assert md is not None
    assert md["spec"]["model"]["version"] == "3"  # the spec is never rewritten
    assert deployments(kube, ns)[f"{NAME}-{current}"][0] == 0
    assert revisions(kube, ns)[0]["outcome"] == "Aborted"
    assert ("Warning", "RolloutAborted") in {(t, r) for t, r, _ in events(kube, ns)}
    assert printed(kube, ns)["ROLLOUT"] == "Aborted"
    assert printed(kube, ns)["SERVING"] == stable
    assert final["versions"].get("2", 0) > 0


def test_a_never_ready_canary_gets_no_traffic_and_is_rolled_back(
    kube: Kube,
    ns: str,
    canary: dict[str, Any],
    *,
    reach: Reach,
    store_base: str,
    models: dict[str, ModelVersion],
    settings: Settings,
) -> None:
    stable = rollout(kube, ns)["stableRevision"]
    # Version 2's archive with version 1's digest: the fetcher refuses it, no pod gets ready.
    broken = copy.deepcopy(
        {
            "uri": store_url(store_base, models["2"].store_path),
            "version": "4",
            "sha256": models["1"].sha256,
        }
    )
    before = rollout(kube, ns)["currentRevision"]  # the revision aborted just before
    with start_load(
        kube, reach, settings, ns, load_plan(settings, None), pod_name="never-load"
    ) as load:
        load.wait_sending()
        kube.patch_md(ns, NAME, {"spec": {"model": broken}})

        def rolled_back() -> bool:
            state = rollout(kube, ns)
            mine = state.get("currentRevision") not in (before, stable)
            return mine and state.get("phase") == "Aborted"

        wait_for(
            rolled_back,
            timeout=settings.timeout,
            what="the never-ready canary to be rolled back",
            details=lambda: kube.describe(ns, NAME),
        )
        current = rollout(kube, ns)["currentRevision"]
        time.sleep(5)  # requests keep going to the stable revision only
        final = load.progress() or {}
    assert final.get("requests", 0) > 0, final
    assert final.get("failures") == 0, final.get("errors")
    assert "4" not in final.get("versions", {}), final
    md = kube.get_md(ns, NAME)
    degraded = condition(md, "Degraded")
    assert degraded is not None
    assert degraded["reason"] == "RolloutAborted"
    assert "never became ready" in degraded["message"]
    assert deployments(kube, ns)[f"{NAME}-{current}"][0] == 0
    assert rollout(kube, ns)["stableRevision"] == stable
    outcomes = {r["name"]: r["outcome"] for r in revisions(kube, ns)}
    assert outcomes[current] == "Aborted"
    assert outcomes[stable] == "Serving"

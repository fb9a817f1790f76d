"""The rollout planner (pure): revisions, step progression, replica arithmetic, abort, promote."""

from __future__ import annotations

import math
from typing import Any

import pytest
from ferry_operator import constants
from ferry_operator.analysis import Figures, Signature
from ferry_operator.observed import trim_child
from ferry_operator.render import RenderOptions, render_children
from ferry_operator.render.revision import revision_hash, revision_template
from ferry_operator.rollout import (
    RolloutDecision,
    canary_replicas,
    plan_rollout,
    probe_request,
    ready_share,
)
from ferry_operator.rollout_observed import LiveDeployment, Probes, RolloutInput, rollout_input
from ferry_operator.spec import ModelDeployment, parse_model_deployment

OPTIONS = RenderOptions(runtime_image="registry.test/ferry-runtime:1")
T0 = "2026-01-01T00:00:00Z"
INF = math.inf
CANARY_STEPS = [{"weight": 25, "pauseSeconds": 60}, {"weight": 50, "pauseSeconds": 60}]


def model(
    version: str = "1", *, replicas: int = 4, strategy: str = "Canary", **rollout: Any
) -> ModelDeployment:
    spec: dict[str, Any] = {
        "model": {"uri": f"http://store/mlp-{version}.tar.gz", "version": version},
        "replicas": replicas,
        "rollout": {"strategy": strategy, **rollout},
    }
    if strategy == "Canary":
        spec["rollout"].setdefault("steps", CANARY_STEPS)
        spec["rollout"].setdefault("analysis", {"minRequests": 10, "maxP99LatencyMs": 500})
    return parse_model_deployment(
        {
            "apiVersion": "serving.ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "mlp", "namespace": "ns", "uid": "u1", "generation": 1},
            "spec": spec,
        }
    )


def template(md: ModelDeployment) -> dict[str, Any]:
    return revision_template(md, OPTIONS)


def rev(md: ModelDeployment) -> str:
    return revision_hash(template(md))


def live(
    md: ModelDeployment,
    name: str = "mlp",
    *,
    replicas: int = 4,
    ready: int | None = None,
    track: str | None = None,
    rollback: ModelDeployment | None = None,
    deadline: bool = False,
) -> LiveDeployment:
    ready = replicas if ready is None else ready
    return LiveDeployment(
        name=name,
        revision=rev(md),
        template=template(md),
        rollback_template=template(rollback) if rollback is not None else None,
        track=track,
        replicas=replicas,
        ready=ready,
        updated=replicas,
        available=ready,
        deadline_exceeded=deadline,
    )


def pod(md: ModelDeployment, *, problem: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {
        "phase": "Pending" if problem else "Running",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
    }
    if problem == "fetch":
        status["initContainerStatuses"] = [
            {
                "name": "fetch-model",
                "ready": False,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {
                    "terminated": {"exitCode": 1, "message": "sha256 mismatch for model.pt"}
                },
            }
        ]
    return {
        "metadata": {"name": "p", "labels": {constants.LABEL_REVISION: rev(md)}},
        "status": status,
    }


def plan(
    md: ModelDeployment,
    deployments: list[LiveDeployment],
    previous: dict[str, Any] | None = None,
    *,
    now: str = T0,
    pods: list[dict[str, Any]] | None = None,
    figures: Figures | None = None,
    signatures: dict[str, Signature] | None = None,
) -> RolloutDecision:
    return plan_rollout(
        RolloutInput(
            md=md,
            template=template(md),
            deployments=tuple(deployments),
            pods=pods or [],
            previous=previous or {},
            probes=Probes(figures=figures, signatures=signatures or {}),
            now=now,
        )
    )


def replicas(decision: RolloutDecision) -> dict[str, int | None]:
    return {d.name: d.replicas for d in decision.layout.deployments}


def outcomes(decision: RolloutDecision) -> dict[str, str]:
    return {r["name"]: r["outcome"] for r in decision.revisions}


def status(decision: RolloutDecision) -> dict[str, Any]:
    return {"rollout": decision.rollout, "revisions": decision.revisions}


SIG = Signature.from_metadata(
    {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }
)
OTHER_SIG = Signature.from_metadata(
    {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 5]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 3]}],
    }
)
GOOD = Figures(requests=200, errors=0, buckets=((0.01, 200.0), (INF, 200.0)))
BROKEN = Figures(requests=50, errors=50, buckets=((0.01, 50.0), (INF, 50.0)))


# --- replica arithmetic ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weight", "total", "shrink", "expected"),
    [
        (25, 4, True, (1, 3)),
        (50, 4, True, (2, 2)),
        (10, 4, True, (1, 3)),  # at least one canary pod
        (20, 1, True, (1, 1)),  # at least one stable pod below 100%
        (90, 2, True, (2, 1)),
        (100, 4, True, (4, 0)),
        (25, 0, True, (0, 0)),
        (25, 3, False, (1, 3)),  # beside an autoscaled stable: 1 / 4 = 25%
        (50, 3, False, (3, 3)),
        (10, 3, False, (1, 3)),
        (100, 3, False, (3, 0)),
    ],
)
def test_canary_replicas(weight: int, total: int, shrink: bool, expected: tuple[int, int]) -> None:
    assert canary_replicas(weight, total, shrink_stable=shrink) == expected


@pytest.mark.parametrize(
    ("canary", "stable", "share"), [(0, 4, 0), (1, 3, 25), (2, 2, 50), (1, 2, 33), (0, 0, 0)]
)
def test_ready_share(canary: int, stable: int, share: int) -> None:
    assert ready_share(canary, stable) == share


# --- one Deployment: first revision, rolling updates, automatic rollback -------------------------


def test_first_revision_gets_the_modeldeployment_name() -> None:
    md = model(strategy="RollingUpdate")
    decision = plan(md, [])
    assert replicas(decision) == {"mlp": 4}
    assert decision.layout.deployments[0].track is None
    assert decision.layout.hpa_target == "mlp"
    assert decision.rollout["phase"] == "Progressing"
    assert outcomes(decision) == {rev(md): "Progressing"}
    record = decision.revisions[0]
    assert record["model"] == "http://store/mlp-1.tar.gz"
    assert record["image"] == "registry.test/ferry-runtime:1"
    assert decision.report is None  # the Deployment's own state speaks


def test_complete_revision_is_stable_and_serving() -> None:
    md = model(strategy="RollingUpdate")
    decision = plan(md, [live(md)], now=T0)
    assert decision.rollout["phase"] == "Complete"
    assert decision.rollout["stableRevision"] == rev(md)
    assert decision.revisions[0]["outcome"] == "Serving"
    assert decision.revisions[0]["firstServed"] == T0


def test_rolling_update_carries_the_last_good_template() -> None:
    old, new = model("1", strategy="RollingUpdate"), model("2", strategy="RollingUpdate")
    decision = plan(new, [live(old)], status(plan(old, [live(old)])))
    [deployment] = decision.layout.deployments
    assert deployment.name == "mlp"
    assert deployment.revision == rev(new)
    assert deployment.rollback_template == template(old)
    assert outcomes(decision) == {rev(new): "Progressing", rev(old): "Serving"}
    assert decision.rollout["stableRevision"] == rev(old)


def test_rolling_update_whose_pods_never_get_ready_is_rolled_back() -> None:
    old, new = model("1", strategy="RollingUpdate"), model("2", strategy="RollingUpdate")
    rolling = live(new, ready=3, rollback=old)  # the old ReplicaSet's pods still serve
    earlier = status(plan(new, [live(old)], status(plan(old, [live(old)]))))
    decision = plan(new, [rolling], earlier, pods=[pod(new, problem="fetch")])
    [deployment] = decision.layout.deployments
    assert deployment.revision == rev(old)
    assert deployment.template == template(old)
    assert deployment.rollback_template is None
    assert outcomes(decision) == {rev(new): "Aborted", rev(old): "Serving"}
    assert decision.rollout["phase"] == "Aborted"
    assert decision.rollout["stableRevision"] == rev(old)
    assert decision.report is not None
    assert decision.report.reason == "RolloutAborted"
    assert decision.report.degraded
    assert decision.report.stalled
    assert "sha256 mismatch" in decision.report.message
    assert "ModelLoadFailed" in decision.report.message

    # Next time round the Deployment runs the old revision again: it stays there.
    after = plan(new, [live(old)], status(decision))
    assert [d.revision for d in after.layout.deployments] == [rev(old)]
    assert after.rollout["phase"] == "Aborted"
    # A new spec is tried again.
    newer = model("3", strategy="RollingUpdate")
    retry = plan(newer, [live(old)], status(after))
    assert [d.revision for d in retry.layout.deployments] == [rev(newer)]
    assert outcomes(retry)[rev(new)] == "Aborted"


def test_progress_deadline_rolls_back_too() -> None:
    old, new = model("1", strategy="RollingUpdate"), model("2", strategy="RollingUpdate")
    decision = plan(new, [live(new, ready=0, rollback=old, deadline=True)])
    assert [d.revision for d in decision.layout.deployments] == [rev(old)]
    assert "ProgressDeadlineExceeded" in decision.rollout["message"]


def test_without_auto_rollback_a_stuck_rollout_stays() -> None:
    old = model("1", strategy="RollingUpdate")
    new = model("2", strategy="RollingUpdate", autoRollback=False)
    decision = plan(new, [live(new, ready=0, rollback=old)], pods=[pod(new, problem="fetch")])
    assert [d.revision for d in decision.layout.deployments] == [rev(new)]
    assert decision.report is None


def test_replicas_are_left_to_the_hpa() -> None:
    md = parse_model_deployment(
        {
            "apiVersion": "serving.ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "mlp", "namespace": "ns", "uid": "u1"},
            "spec": {
                "model": {"uri": "http://store/m.tar.gz"},
                "autoscaling": {"maxReplicas": 5},
            },
        }
    )
    assert replicas(plan(md, [])) == {"mlp": None}


# --- canary ------------------------------------------------------------------------------------


def canary_start() -> tuple[ModelDeployment, ModelDeployment, dict[str, Any]]:
    old, new = model("1"), model("2")
    return old, new, status(plan(old, [live(old)]))


def test_canary_starts_beside_the_stable_without_shrinking_it() -> None:
    old, new, earlier = canary_start()
    decision = plan(new, [live(old)], earlier)
    assert replicas(decision) == {"mlp": 4, f"mlp-{rev(new)}": 1}
    canary = decision.layout.deployments[1]
    assert canary.track == rev(new)
    assert decision.layout.hpa_target == "mlp"
    assert decision.rollout | {"phase": "Progressing", "step": 1, "steps": 2, "weight": 0} == (
        decision.rollout
    )
    assert decision.report is not None
    assert decision.report.reason == "CanaryInProgress"
    assert not decision.report.degraded
    assert decision.requeue_after is not None


def test_stable_shrinks_only_after_the_signature_check() -> None:
    old, new, earlier = canary_start()
    canary = live(new, f"mlp-{rev(new)}", replicas=1, track=rev(new))
    unread = plan(new, [live(old), canary], earlier)
    assert replicas(unread) == {"mlp": 4, f"mlp-{rev(new)}": 1}
    assert "signatures" in unread.rollout["message"]

    checked = plan(
        new, [live(old), canary], earlier, signatures={rev(old): SIG, rev(new): SIG}, figures=GOOD
    )
    assert replicas(checked) == {"mlp": 3, f"mlp-{rev(new)}": 1}
    assert checked.rollout["stepStartedAt"] == T0
    assert checked.rollout["stepBaselineRequests"] == 200
    assert checked.rollout["weight"] == 20  # 1 ready canary beside 4 ready stable pods


def test_signature_change_aborts_before_the_stable_shrinks() -> None:
    old, new, earlier = canary_start()
    canary = live(new, f"mlp-{rev(new)}", replicas=1, track=rev(new))
    decision = plan(
        new, [live(old), canary], earlier, signatures={rev(old): SIG, rev(new): OTHER_SIG}
    )
    assert replicas(decision) == {"mlp": 4, f"mlp-{rev(new)}": 0}
    assert decision.report is not None
    assert decision.report.reason == "SignatureChanged"
    assert "input x: FP32[-1, 4] -> FP32[-1, 5]" in decision.report.message
    assert outcomes(decision)[rev(new)] == "Aborted"
    assert decision.revisions[0]["reason"] == "SignatureChanged"


def test_signature_change_may_be_allowed() -> None:
    old, new = model("1"), model("2", allowSignatureChange=True)
    earlier = status(plan(old, [live(old)]))
    canary = live(new, f"mlp-{rev(new)}", replicas=1, track=rev(new))
    decision = plan(new, [live(old), canary], earlier, figures=GOOD)
    assert replicas(decision) == {"mlp": 3, f"mlp-{rev(new)}": 1}
    assert (
        probe_request(
            RolloutInput(md=new, template=template(new), deployments=(live(old), canary))
        ).signatures_of
        == ()
    )


def running_step(
    old: ModelDeployment, new: ModelDeployment, earlier: dict[str, Any]
) -> tuple[list[LiveDeployment], dict[str, Any]]:
    deployments = [
        live(old, replicas=3),
        live(new, f"mlp-{rev(new)}", replicas=1, track=rev(new)),
    ]
    started = plan(
        new, deployments, earlier, signatures={rev(old): SIG, rev(new): SIG}, figures=GOOD
    )
    return deployments, status(started)


def test_erroring_canary_is_aborted_at_once() -> None:
    old, new, earlier = canary_start()
    deployments, started = running_step(old, new, earlier)
    decision = plan(
        new,
        deployments,
        started,
        now="2026-01-01T00:00:05Z",
        signatures={rev(old): SIG, rev(new): SIG},
        figures=BROKEN,
    )
    assert replicas(decision) == {"mlp": 4, f"mlp-{rev(new)}": 0}
    assert decision.rollout["phase"] == "Aborted"
    assert decision.report is not None
    assert decision.report.reason == "RolloutAborted"
    assert "50 of 50 requests failed (100.00%, limit 1%)" in decision.report.message
    assert "step 1/2 (25%)" in decision.report.message
    assert decision.rollout["analysis"]["errors"] == 50

    # Aborted stays aborted (the spec is unchanged); the canary stays at 0.
    again = plan(new, deployments, status(decision), now="2026-01-01T01:00:00Z")
    assert replicas(again) == {"mlp": 4, f"mlp-{rev(new)}": 0}
    assert again.rollout["phase"] == "Aborted"
    # Another spec: a new canary; the aborted one's Deployment is no longer rendered (pruned).
    newer = model("3")
    retry = plan(newer, deployments, status(again))
    assert set(replicas(retry)) == {"mlp", f"mlp-{rev(newer)}"}
    assert outcomes(retry)[rev(new)] == "Aborted"


def test_step_waits_for_its_pause_then_for_requests_then_advances() -> None:
    old, new, earlier = canary_start()
    deployments, started = running_step(old, new, earlier)
    sigs = {rev(old): SIG, rev(new): SIG}
    halfway = plan(
        new, deployments, started, now="2026-01-01T00:00:30Z", signatures=sigs, figures=GOOD
    )
    assert halfway.rollout["phase"] == "Progressing"
    assert halfway.rollout["stepStartedAt"] == T0
    assert "30s of the step left" in halfway.rollout["message"]

    idle = plan(
        new, deployments, started, now="2026-01-01T00:01:00Z", signatures=sigs, figures=GOOD
    )
    assert idle.rollout["phase"] == "Paused"
    assert idle.report is not None
    assert idle.report.reason == "CanaryPaused"
    assert "waiting for requests: 0 of 10" in idle.rollout["message"]

    busier = Figures(requests=260, errors=0, buckets=((0.01, 260.0), (INF, 260.0)))
    advanced = plan(
        new, deployments, started, now="2026-01-01T00:01:00Z", signatures=sigs, figures=busier
    )
    assert advanced.rollout["step"] == 2
    assert advanced.rollout["phase"] == "Progressing"
    assert "stepStartedAt" not in advanced.rollout
    assert replicas(advanced) == {"mlp": 3, f"mlp-{rev(new)}": 2}  # stable waits for pod 2
    assert [n.reason for n in advanced.notices] == ["CanaryStep"]


def test_last_step_promotes_then_removes_the_stable() -> None:
    old, new, earlier = canary_start()
    sigs = {rev(old): SIG, rev(new): SIG}
    at_step_2 = {
        **earlier,
        "rollout": {
            "currentRevision": rev(new),
            "stableRevision": rev(old),
            "phase": "Progressing",
            "step": 2,
            "stepStartedAt": T0,
            "stepBaselineRequests": 100,
        },
    }
    deployments = [live(old, replicas=2), live(new, f"mlp-{rev(new)}", replicas=2, track=rev(new))]
    promoting = plan(
        new, deployments, at_step_2, now="2026-01-01T00:05:00Z", signatures=sigs, figures=GOOD
    )
    assert promoting.rollout["phase"] == "Promoting"
    assert replicas(promoting) == {"mlp": 2, f"mlp-{rev(new)}": 4}
    assert promoting.report is not None
    assert promoting.report.reason == "RolloutPromoting"

    half = [
        live(old, replicas=2),
        live(new, f"mlp-{rev(new)}", replicas=4, ready=3, track=rev(new)),
    ]
    shrinking = plan(new, half, status(promoting), signatures=sigs)
    assert replicas(shrinking) == {"mlp": 1, f"mlp-{rev(new)}": 4}

    done = [live(old, replicas=0), live(new, f"mlp-{rev(new)}", replicas=4, track=rev(new))]
    promoted = plan(new, done, status(shrinking), signatures=sigs)
    assert replicas(promoted) == {f"mlp-{rev(new)}": 4}  # the stable one is pruned
    assert promoted.layout.hpa_target == f"mlp-{rev(new)}"
    assert promoted.layout.deployments[0].track == rev(new)  # same Deployment: no restart
    assert promoted.rollout["phase"] == "Complete"
    assert promoted.rollout["stableRevision"] == rev(new)
    assert outcomes(promoted) == {rev(new): "Serving", rev(old): "Superseded"}
    assert [n.reason for n in promoted.notices] == ["RolloutPromoted"]
    assert promoted.report is None

    # Steady state afterwards: one Deployment, nothing to do.
    steady = plan(new, done[1:], status(promoted))
    assert replicas(steady) == {f"mlp-{rev(new)}": 4}
    assert steady.rollout["phase"] == "Complete"


def test_never_ready_canary_gets_no_traffic_and_is_rolled_back() -> None:
    old, new, earlier = canary_start()
    canary = live(new, f"mlp-{rev(new)}", replicas=1, ready=0, track=rev(new))
    waiting = plan(new, [live(old), canary], earlier, pods=[pod(new)])
    assert replicas(waiting) == {"mlp": 4, f"mlp-{rev(new)}": 1}  # the stable keeps all
    aborted = plan(new, [live(old), canary], earlier, pods=[pod(new, problem="fetch")])
    assert replicas(aborted) == {"mlp": 4, f"mlp-{rev(new)}": 0}
    assert aborted.report is not None
    assert aborted.report.reason == "RolloutAborted"
    assert "never became ready" in aborted.report.message


def test_analysis_failure_without_auto_rollback_pauses() -> None:
    old, new = model("1"), model("2", autoRollback=False)
    earlier = status(plan(old, [live(old)]))
    deployments, started = running_step(old, new, earlier)
    decision = plan(
        new, deployments, started, signatures={rev(old): SIG, rev(new): SIG}, figures=BROKEN
    )
    assert decision.rollout["phase"] == "Paused"
    assert decision.report is not None
    assert decision.report.reason == "AnalysisFailed"
    assert decision.report.degraded
    assert outcomes(decision)[rev(new)] == "Progressing"
    assert replicas(decision) == {"mlp": 3, f"mlp-{rev(new)}": 1}


def test_spec_back_to_the_stable_revision_drops_the_canary() -> None:
    old, new, earlier = canary_start()
    deployments, started = running_step(old, new, earlier)
    decision = plan(old, deployments, started)
    assert replicas(decision) == {"mlp": 4}


def test_canary_beside_an_autoscaled_stable_is_extra_capacity() -> None:
    def scaled(version: str) -> ModelDeployment:
        return parse_model_deployment(
            {
                "apiVersion": "serving.ferry.dev/v1alpha1",
                "kind": "ModelDeployment",
                "metadata": {"name": "mlp", "namespace": "ns", "uid": "u1"},
                "spec": {
                    "model": {"uri": f"http://store/{version}.tar.gz"},
                    "autoscaling": {"minReplicas": 2, "maxReplicas": 6},
                    "rollout": {"strategy": "Canary", "steps": [{"weight": 25}]},
                },
            }
        )

    old, new = scaled("1"), scaled("2")
    earlier = status(plan(old, [live(old, replicas=3)]))
    decision = plan(new, [live(old, replicas=3)], earlier)
    assert replicas(decision) == {"mlp": None, f"mlp-{rev(new)}": 1}
    assert decision.layout.hpa_target == "mlp"


def test_probe_request_only_while_a_canary_serves() -> None:
    old, new, earlier = canary_start()
    stable = live(old)

    def request(*deployments: LiveDeployment) -> tuple[str | None, tuple[str, ...]]:
        asked = probe_request(
            RolloutInput(md=new, template=template(new), deployments=deployments, previous=earlier)
        )
        return asked.figures_of, asked.signatures_of

    assert request(stable) == (None, ())
    not_ready = live(new, f"mlp-{rev(new)}", replicas=1, ready=0, track=rev(new))
    assert request(stable, not_ready) == (None, ())
    ready = live(new, f"mlp-{rev(new)}", replicas=1, track=rev(new))
    assert request(stable, ready) == (rev(new), (rev(old), rev(new)))


def test_history_keeps_ten_revisions_newest_first() -> None:
    previous: dict[str, Any] = {}
    md = model("0", strategy="RollingUpdate")
    deployment = live(md)
    for version in range(12):
        md = model(str(version), strategy="RollingUpdate")
        previous = status(plan(md, [deployment], previous))
        deployment = live(md)
        previous = status(plan(md, [deployment], previous))
    names = [r["name"] for r in previous["revisions"]]
    assert len(names) == 10
    assert names[0] == rev(model("11", strategy="RollingUpdate"))
    assert [r["outcome"] for r in previous["revisions"]] == ["Serving"] + ["Superseded"] * 9


def _snapshot(md: ModelDeployment, **status: Any) -> dict[str, Any]:
    """The rendered Deployment of ``md`` as the operator's index keeps it."""
    [deployment] = [c for c in render_children(md, OPTIONS) if c["kind"] == "Deployment"]
    deployment["metadata"]["generation"] = 1
    deployment["status"] = {"observedGeneration": 1, **status}
    return trim_child(deployment)


def test_rollout_input_reads_the_live_deployments() -> None:
    md = model(strategy="RollingUpdate")
    snapshot = _snapshot(md, replicas=4, readyReplicas=4, updatedReplicas=4, availableReplicas=4)
    inputs = rollout_input(md, OPTIONS, [snapshot], [], status={}, now=T0)
    [deployment] = inputs.deployments
    assert deployment == live(md)
    assert inputs.revision == rev(md)


def test_a_template_that_no_longer_parses_is_left_alone() -> None:
    old, new = model("1"), model("2")
    snapshot = _snapshot(old, replicas=4, readyReplicas=4, updatedReplicas=4, availableReplicas=4)
    annotations = snapshot["metadata"]["annotations"]
    annotations[constants.TEMPLATE_ANNOTATION] = '{"model": {"uri": "ftp://nowhere"}}'
    inputs = rollout_input(new, OPTIONS, [snapshot], [], status={}, now=T0)
    assert inputs.deployments[0].template is None
    decision = plan_rollout(inputs)
    # The canary runs beside it; the serving Deployment is kept as it is, never rendered from
    # the bad template (and never pruned while it serves).
    assert [(d.name, d.revision) for d in decision.layout.deployments] == [
        (f"mlp-{rev(new)}", rev(new))
    ]
    assert decision.keep == {"mlp"}


def routes(decision: RolloutDecision) -> dict[str, int]:
    return {backend.revision: backend.weight for backend in decision.layout.routes}


def test_through_a_gateway_the_canary_gets_the_exact_step_weight() -> None:
    gateway = {"name": "edge"}
    old, new = model("1", gateway=gateway), model("2", gateway=gateway)
    earlier = status(plan(old, [live(old)]))
    assert routes(plan(old, [live(old)])) == {rev(old): 100}
    not_ready = live(new, f"mlp-{rev(new)}", replicas=1, ready=0, track=rev(new))
    assert routes(plan(new, [live(old), not_ready], earlier)) == {rev(old): 100, rev(new): 0}
    deployments, started = running_step(old, new, earlier)
    sigs = {rev(old): SIG, rev(new): SIG}
    running = plan(new, deployments, started, signatures=sigs, figures=GOOD)
    assert routes(running) == {rev(old): 75, rev(new): 25}  # the step's weight, not 1 pod of 4
    aborted = plan(new, deployments, started, signatures=sigs, figures=BROKEN)
    assert routes(aborted) == {rev(old): 100, rev(new): 0}
    done = [live(old, replicas=0), live(new, f"mlp-{rev(new)}", replicas=4, track=rev(new))]
    promoting = {**started, "rollout": {**started["rollout"], "phase": "Promoting"}}
    promoted = plan(new, done, promoting, signatures=sigs)
    assert routes(promoted) == {rev(new): 100}
    half = [
        live(old, replicas=2),
        live(new, f"mlp-{rev(new)}", replicas=4, ready=2, track=rev(new)),
    ]
    assert routes(plan(new, half, promoting, signatures=sigs)) == {rev(old): 50, rev(new): 50}


def test_without_a_gateway_there_are_no_routes() -> None:
    old, new, earlier = canary_start()
    assert plan(new, [live(old)], earlier).layout.routes == ()

"""Pure: revisions, canary steps and analysis verdicts → the Deployments to run and their replicas.

Every distinct pod template is a *revision* (:mod:`ferry_operator.render.revision`). The
*stable* revision is the last one that served with all its replicas ready; the *current* one is
the spec's. :func:`plan_rollout` looks at the live Deployments, their pods, what the runtime
pods report (:class:`Probes`) and the rollout state kept in ``status.rollout`` and
``status.revisions``, and decides:

* **RollingUpdate**: one Deployment, updated in place (maxSurge, maxUnavailable). It carries the
  last good template while the new one rolls out; with ``autoRollback``, new pods that never
  become ready (model load failure, crash loop, image pull failure, progress deadline) put that
  template back: the old ReplicaSet, whose pods never left, takes over again.
* **Canary**: the new revision runs as a second Deployment beside the stable one; the one
  Service selects both, so each revision's share of the traffic is its share of the ready
  replicas. Each step sets the canary's replicas for its weight; the stable one only shrinks
  by canary pods that are ready (readiness gates the endpoints, so no request goes to a pod
  that is not), and, before the stable shrinks at all, the new model's signature is compared
  with the stable one's. The analysis judges each step; a failure aborts (canary to 0, stable
  back to all replicas). After the last step the canary takes every replica and the stable
  Deployment is removed: the new revision's pods are never restarted.

An aborted revision stays aborted until the spec asks for another one: the spec is never
rewritten. The reconcile only carries out these decisions.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ferry_operator.analysis import judge, signature_change
from ferry_operator.events import Notice
from ferry_operator.render.names import child_name
from ferry_operator.render.revision import (
    Layout,
    RevisionDeployment,
    RouteBackend,
    Template,
    revision_deployment_name,
    revision_hash,
)
from ferry_operator.rollout_observed import (
    History,
    LiveDeployment,
    ProbeRequest,
    RolloutInput,
    served_target,
    stuck,
)
from ferry_operator.spec import ModelDeployment
from ferry_operator.status import Report

ROLLOUT_ABORTED = "RolloutAborted"
SIGNATURE_CHANGED = "SignatureChanged"
CANARY_IN_PROGRESS = "CanaryInProgress"
CANARY_PAUSED = "CanaryPaused"
ANALYSIS_FAILED = "AnalysisFailed"
ROLLOUT_PROMOTING = "RolloutPromoting"
ROLLOUT_PROMOTED = "RolloutPromoted"
CANARY_STEP = "CanaryStep"

POLL_SECONDS = 5.0
"""How often a running canary is looked at again (metrics, step timers)."""


# --- what it decides ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutDecision:
    """What to run, and what to say about it."""

    layout: Layout
    main: str | None
    """The Deployment whose state the plain Ready/Progressing verdict is about."""
    rollout: dict[str, Any]
    """``status.rollout``."""
    revisions: list[dict[str, Any]]
    """``status.revisions``."""
    report: Report | None = None
    notices: tuple[Notice, ...] = ()
    requeue_after: float | None = None
    keep: frozenset[str] = frozenset()
    """Deployments not rendered (no template to render them from) that must not be pruned."""


# --- small pure helpers ------------------------------------------------------------------------


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an RFC 3339 UTC time; ``None`` when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def canary_replicas(weight: int, total: int, *, shrink_stable: bool) -> tuple[int, int]:
    """(canary, stable) replica targets for a step of ``weight`` percent over ``total`` pods.

    With ``shrink_stable`` the canary's pods come out of the stable's ``total`` (at least one
    canary pod; at least one stable pod until the weight is 100). Without it (an HPA owns the
    stable's count) the canary is extra capacity sized so that canary / (stable + canary) is
    closest to the weight.
    """
    if total <= 0:
        return 0, 0
    if weight >= 100:
        return total, 0
    if shrink_stable:
        canary = min(total, max(1, round(total * weight / 100)))
        return canary, max(1, total - canary)
    canary = max(1, round(total * weight / (100 - weight)))
    return canary, total


def ready_share(canary_ready: int, stable_ready: int) -> int:
    """Percent of the ready replicas that run the canary."""
    ready = canary_ready + stable_ready
    return round(100 * canary_ready / ready) if ready else 0


def _stable(
    deployments: Sequence[LiveDeployment], previous: Mapping[str, Any], revision: str
) -> LiveDeployment | None:
    """The Deployment of the stable revision (the last good one)."""
    if not deployments:
        return None
    recorded = previous.get("stableRevision")
    matching = [d for d in deployments if recorded and d.revision == recorded]
    if matching:
        return min(matching, key=lambda d: d.track is not None)
    if len(deployments) == 1:
        return deployments[0]
    others = [d for d in deployments if d.revision != revision] or list(deployments)
    return max(others, key=lambda d: (d.ready, d.track is None))


def _replicas_total(md: ModelDeployment, stable: LiveDeployment | None) -> int:
    autoscaling = md.spec.autoscaling
    if autoscaling is None:
        return md.spec.replicas
    live = stable.replicas if stable is not None else 0
    return max(autoscaling.min_replicas, min(autoscaling.max_replicas, live))


def probe_request(inp: RolloutInput) -> ProbeRequest:
    """What to read from the runtime pods for ``inp`` (whose probes are not filled yet)."""
    md, revision = inp.md, inp.revision
    previous = inp.previous.get("rollout") or {}
    live = tuple(inp.deployments)
    stable = _stable(live, previous, revision)
    canary = next((d for d in live if d.revision == revision and d is not stable), None)
    if (
        md.spec.rollout.strategy != "Canary"
        or stable is None
        or canary is None
        or canary.ready == 0
        or History(inp.previous.get("revisions")).aborted(revision)
    ):
        return ProbeRequest()
    signatures: tuple[str, ...] = ()
    if not md.spec.rollout.allow_signature_change and stable.revision is not None:
        signatures = (stable.revision, revision)
    targets = {revision: served_target(md, inp.template)}
    if stable.revision is not None:
        targets[stable.revision] = served_target(md, stable.template)
    return ProbeRequest(figures_of=revision, signatures_of=signatures, targets=targets)


# --- the decision ------------------------------------------------------------------------------


@dataclass
class _Draft:
    """A decision being put together."""

    inp: RolloutInput
    history: History
    state: dict[str, Any]
    deployments: list[RevisionDeployment] = field(default_factory=list)
    hpa_target: str | None = None
    main: str | None = None
    report: Report | None = None
    notices: list[Notice] = field(default_factory=list)
    requeue_after: float | None = None
    keep: set[str] = field(default_factory=set)
    canary_weight: int | None = None
    """Route weight of the current revision beside the stable one (with a Gateway)."""

    @property
    def autoscaled(self) -> bool:
        return self.inp.md.spec.autoscaling is not None

    def run(
        self,
        live: LiveDeployment | None,
        name: str,
        revision: str,
        template: Template | None,
        replicas: int | None,
        *,
        rollback: Template | None = None,
    ) -> None:
        """Render ``name`` running ``revision``; a Deployment without a known template (made
        before revisions existed) is left as it is."""
        if template is None:
            self.keep.add(name)
            return
        track = live.track if live is not None else None
        if live is None and name != child_name(self.inp.md):
            track = revision
        self.deployments.append(
            RevisionDeployment(name, revision, template, replicas, track, rollback)
        )

    def routes(self) -> tuple[RouteBackend, ...]:
        """Each rendered revision's route weight (only with a Gateway)."""
        if self.inp.md.spec.rollout.gateway is None:
            return ()
        revisions = [d.revision for d in self.deployments]
        if len(revisions) == 1 or self.canary_weight is None:
            return tuple(RouteBackend(r, 100 // len(revisions)) for r in revisions)
        current = self.inp.revision
        return tuple(
            RouteBackend(r, self.canary_weight if r == current else 100 - self.canary_weight)
            for r in revisions
        )

    def decision(self) -> RolloutDecision:
        names = [d.name for d in self.deployments]
        target = self.hpa_target or (names[0] if names else child_name(self.inp.md))
        layout = Layout(
            deployments=tuple(self.deployments), hpa_target=target, routes=self.routes()
        )
        return RolloutDecision(
            layout=layout,
            main=self.main,
            rollout={key: value for key, value in self.state.items() if value is not None},
            revisions=self.history.records,
            report=self.report,
            notices=tuple(self.notices),
            requeue_after=self.requeue_after,
            keep=frozenset(self.keep),
        )


def plan_rollout(inp: RolloutInput) -> RolloutDecision:
    """Decide the Deployments, their replicas and the rollout status for ``inp``."""
    md, revision = inp.md, inp.revision
    previous = dict(inp.previous.get("rollout") or {})
    history = History(inp.previous.get("revisions"))
    history.see(revision, inp.template)
    live = tuple(inp.deployments)
    stable = _stable(live, previous, revision)
    strategy = md.spec.rollout.strategy
    state: dict[str, Any] = {
        "currentRevision": revision,
        "stableRevision": previous.get("stableRevision"),
        "strategy": strategy,
    }
    draft = _Draft(inp, history, state)
    if (
        strategy == "Canary"
        and stable is not None
        and stable.revision not in (None, revision)
        and _canary_may_run(stable, previous, revision)
    ):
        _canary(draft, stable, previous)
    else:
        _single(draft, stable)
    return draft.decision()


def _canary_may_run(stable: LiveDeployment, previous: Mapping[str, Any], revision: str) -> bool:
    """A canary needs a good revision beside it: one that was complete, or one the rollout of
    this very revision already runs beside."""
    return (
        stable.complete
        or previous.get("stableRevision") == stable.revision
        or previous.get("currentRevision") == revision
    )


def _single(draft: _Draft, live: LiveDeployment | None) -> None:
    """One Deployment: created, kept, updated in place, or rolled back."""
    inp, history, state = draft.inp, draft.history, draft.state
    md, revision, pods, now = inp.md, inp.revision, inp.pods, inp.now
    total = None if draft.autoscaled else md.spec.replicas
    name = live.name if live is not None else child_name(md)
    draft.main = name
    state["phase"] = "Progressing"

    aborted = history.aborted(revision)
    if live is not None and live.revision != revision and aborted is not None:
        # The spec still asks for the aborted revision: keep serving the stable one.
        draft.run(live, name, str(live.revision), live.template, total)
        _report_aborted(draft, aborted)
        return

    if live is None or live.revision == revision:
        rollback = live.rollback_template if live is not None else None
        if rollback is not None and revision_hash(rollback) == revision:
            rollback = None
        if live is not None and live.ready > 0:
            history.served(revision, now)
        if live is not None and live.complete:
            history.serving(revision)
            state.update(stableRevision=revision, phase="Complete", weight=100)
            draft.run(live, name, revision, inp.template, total)
            return
        problem = stuck(live, pods)
        if problem is not None and rollback is not None and md.spec.rollout.auto_rollback:
            good = revision_hash(rollback)
            message = (
                f"revision {revision} rolled back to {good}: its pods never became ready "
                f"({problem})"
            )
            history.abort(revision, ROLLOUT_ABORTED, message)
            history.serving(good)
            state["stableRevision"] = good
            draft.run(live, name, good, rollback, total)
            _report_aborted(draft, history.get(revision) or {})
            return
        state["message"] = f"rolling out revision {revision}"
        draft.run(live, name, revision, inp.template, total, rollback=rollback)
        return

    # In place: the Deployment runs another revision. Remember the good template to return to.
    rollback = live.template if live.complete else live.rollback_template
    if live.complete and live.revision is not None:
        history.serving(live.revision)
        state["stableRevision"] = live.revision
    state["message"] = f"rolling out revision {revision} in place of {live.revision}"
    draft.run(live, name, revision, inp.template, total, rollback=rollback)


def _report_aborted(draft: _Draft, record: Mapping[str, Any]) -> None:
    reason = str(record.get("reason") or ROLLOUT_ABORTED)
    message = str(record.get("message") or "rollout aborted")
    draft.state.update(phase="Aborted", message=message)
    draft.report = Report(reason, message, progressing=False, degraded=True, stalled=True)


def _abort(draft: _Draft, reason: str, message: str) -> None:
    draft.history.abort(draft.inp.revision, reason, message)
    _report_aborted(draft, draft.history.get(draft.inp.revision) or {})


def _canary(draft: _Draft, stable: LiveDeployment, previous: Mapping[str, Any]) -> None:
    """The current revision beside the stable one, step by step."""
    inp, history, state = draft.inp, draft.history, draft.state
    md, revision, now = inp.md, inp.revision, inp.now
    rollout = md.spec.rollout
    stable_revision = str(stable.revision)
    state["stableRevision"] = stable_revision
    history.serving(stable_revision)
    history.see(revision, inp.template)
    canary = next((d for d in inp.deployments if d.revision == revision and d is not stable), None)
    canary_name = canary.name if canary is not None else revision_deployment_name(md, revision)
    total = _replicas_total(md, stable)
    shrink = not draft.autoscaled
    stable_replicas = total if shrink else None
    draft.hpa_target = stable.name
    draft.main = stable.name
    steps = rollout.steps
    state["steps"] = len(steps)

    aborted = history.aborted(revision)
    if aborted is not None:
        draft.run(stable, stable.name, stable_revision, stable.template, stable_replicas)
        if canary is not None:
            draft.run(canary, canary_name, revision, inp.template, 0)
        state["weight"] = 0
        draft.canary_weight = 0
        _report_aborted(draft, aborted)
        return

    mine = previous if previous.get("currentRevision") == revision else {}
    phase = str(mine.get("phase") or "Progressing")
    step = min(max(int(mine.get("step") or 1), 1), len(steps))
    canary_ready = canary.ready if canary is not None else 0
    if canary_ready:
        history.served(revision, now)

    def finish(
        canary_target: int, stable_target: int | None, traffic: int, weight: int = 0
    ) -> None:
        draft.run(stable, stable.name, stable_revision, stable.template, stable_target)
        draft.run(canary, canary_name, revision, inp.template, canary_target)
        state["weight"] = ready_share(traffic, stable.ready)
        state["step"] = step
        # Through a Gateway the canary gets the step's exact weight, once a pod of it serves.
        draft.canary_weight = weight if traffic > 0 else 0
        draft.requeue_after = POLL_SECONDS

    problem = stuck(canary, inp.pods)
    if problem is not None and rollout.auto_rollback:
        _abort(draft, ROLLOUT_ABORTED, f"canary {revision} never became ready: {problem}")
        finish(0, stable_replicas, 0)
        draft.requeue_after = None
        return

    verified = True
    if canary_ready and not rollout.allow_signature_change:
        old = inp.probes.signatures.get(stable_revision)
        new = inp.probes.signatures.get(revision)
        if old is None or new is None:
            verified = False
            state["message"] = "reading the model signatures of both revisions"
        elif (change := signature_change(old, new)) is not None:
            message = (
                f"canary {revision} changes the model signature ({change}); set "
                "spec.rollout.allowSignatureChange to allow it"
            )
            _abort(draft, SIGNATURE_CHANGED, message)
            finish(0, stable_replicas, 0)
            draft.requeue_after = None
            return
    traffic = canary_ready if verified else 0

    if phase == "Promoting":
        _promote(
            draft, stable, canary=canary, canary_name=canary_name, total=total, traffic=traffic
        )
        return

    weight = steps[step - 1].weight
    canary_target, stable_goal = canary_replicas(weight, total, shrink_stable=shrink)
    step_ready = (
        canary is not None and canary.current and verified and canary_ready >= canary_target
    )
    state.update(phase="Progressing", stepStartedAt=None, stepBaselineRequests=None)
    if not step_ready:
        state["message"] = state.get("message") or (
            f"step {step}/{len(steps)} ({weight}%): {canary_ready} of {canary_target} canary "
            "pods ready"
        )
        draft.report = Report(
            CANARY_IN_PROGRESS, state["message"], progressing=True, degraded=False
        )
        finish(canary_target, _stable_target(stable_goal, total, traffic, shrink), traffic, weight)
        return

    started_text = mine.get("stepStartedAt") if mine.get("step") == step else None
    started = parse_time(started_text) or parse_time(now) or 0.0
    figures = inp.probes.figures
    baseline = mine.get("stepBaselineRequests") if started_text else None
    if baseline is None:
        baseline = figures.requests if figures is not None else 0
    state.update(stepStartedAt=started_text or now, stepBaselineRequests=int(baseline))
    elapsed = (parse_time(now) or 0.0) - started
    judgement = judge(
        figures,
        rollout.analysis,
        baseline_requests=int(baseline),
        elapsed_s=elapsed,
        pause_s=steps[step - 1].pause_seconds,
    )
    if judgement.figures:
        state["analysis"] = judgement.figures
    where = f"step {step}/{len(steps)} ({weight}%)"
    if judgement.verdict == "fail":
        message = f"canary {revision} failed its analysis at {where}: {judgement.message}"
        if rollout.auto_rollback:
            _abort(draft, ROLLOUT_ABORTED, message)
            finish(0, stable_replicas, 0)
            draft.requeue_after = None
            return
        state.update(phase="Paused", message=message)
        draft.report = Report(ANALYSIS_FAILED, message, progressing=True, degraded=True)
        finish(canary_target, _stable_target(stable_goal, total, traffic, shrink), traffic, weight)
        return
    if judgement.verdict == "wait":
        paused = elapsed >= steps[step - 1].pause_seconds
        state.update(
            phase="Paused" if paused else "Progressing", message=f"{where}: {judgement.message}"
        )
        reason = CANARY_PAUSED if paused else CANARY_IN_PROGRESS
        draft.report = Report(reason, state["message"], progressing=True, degraded=False)
        finish(canary_target, _stable_target(stable_goal, total, traffic, shrink), traffic, weight)
        return
    draft.notices.append(Notice("Normal", CANARY_STEP, f"{where} passed: {judgement.message}"))
    if step < len(steps):
        step += 1
        weight = steps[step - 1].weight
        canary_target, stable_goal = canary_replicas(weight, total, shrink_stable=shrink)
        state.update(
            phase="Progressing",
            stepStartedAt=None,
            stepBaselineRequests=None,
            message=f"step {step}/{len(steps)} ({weight}%): scaling the canary to {canary_target}",
        )
        draft.report = Report(
            CANARY_IN_PROGRESS, state["message"], progressing=True, degraded=False
        )
        finish(canary_target, _stable_target(stable_goal, total, traffic, shrink), traffic, weight)
        return
    _promote(draft, stable, canary=canary, canary_name=canary_name, total=total, traffic=traffic)


def _stable_target(goal: int, total: int, canary_traffic: int, shrink: bool) -> int | None:
    """The stable's replicas: shrunk towards ``goal`` only by canary pods that take traffic."""
    if not shrink:
        return None
    return max(goal, total - canary_traffic)


def _promote(
    draft: _Draft,
    stable: LiveDeployment,
    *,
    canary: LiveDeployment | None,
    canary_name: str,
    total: int,
    traffic: int,
) -> None:
    """Every replica to the canary; once they are all ready, the stable Deployment goes."""
    inp, history, state = draft.inp, draft.history, draft.state
    revision = inp.revision
    shrink = not draft.autoscaled
    state.update(phase="Promoting", stepStartedAt=None, stepBaselineRequests=None)
    state["step"] = state.get("steps")
    if canary is not None and canary.current and canary.ready >= total and canary.complete:
        history.serving(revision)
        state.update(stableRevision=revision, phase="Complete", weight=100, step=None)
        state["message"] = f"revision {revision} promoted"
        draft.notices.append(
            Notice(
                "Normal",
                ROLLOUT_PROMOTED,
                f"revision {revision} promoted; {stable.revision} removed",
            )
        )
        draft.deployments.clear()
        draft.hpa_target = canary_name
        draft.main = canary_name
        draft.run(canary, canary_name, revision, inp.template, total if shrink else None)
        draft.report = None
        return
    stable_target = max(0, total - traffic) if shrink else None
    draft.run(stable, stable.name, str(stable.revision), stable.template, stable_target)
    draft.run(canary, canary_name, revision, inp.template, total)
    state["weight"] = ready_share(traffic, stable.ready)
    draft.canary_weight = state["weight"]
    state["message"] = f"promoting revision {revision}: {traffic} of {total} replicas ready"
    draft.report = Report(ROLLOUT_PROMOTING, state["message"], progressing=True, degraded=False)
    draft.requeue_after = POLL_SECONDS

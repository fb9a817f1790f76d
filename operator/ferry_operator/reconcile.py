"""One level-based reconcile of one ModelDeployment: decide (pure), then act (few writes).

:func:`plan` compares what the spec asks for with what the cluster holds and returns the
writes needed and nothing more: a child is applied only when it is missing, when its
``serving.ferry.dev/applied-hash`` differs from the manifest's, or when someone else changed a
field Ferry owns (see :mod:`ferry_operator.ownership`); children of the kinds Ferry manages that
the spec no longer asks for are pruned, but only when labelled ``managed-by: ferry`` and
controlled by this very object (its uid). :func:`reconcile` performs the plan through a
:class:`Writer` (``cluster.Cluster``), then writes the status only when it changed.

Whatever triggered it, a reconcile looks at the whole current state, so running it again
changes nothing: an unchanged object costs no API request at all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ferry_operator import constants
from ferry_operator.errors import ApiError, Blocked
from ferry_operator.events import event_body, notices
from ferry_operator.observed import (
    APPLIED_HASH_ANNOTATION,
    ClusterView,
    InstanceKey,
    ObjectKey,
    OwnerKey,
    Snapshot,
    controller_uid,
    object_key,
    trim_child,
    trim_owner,
)
from ferry_operator.ownership import applied_fields, missing_fields
from ferry_operator.probes import Prober
from ferry_operator.render import CHILD_KINDS, Layout, RenderError, RenderOptions, render_children
from ferry_operator.render.names import label_value
from ferry_operator.render.revision import revision_hash
from ferry_operator.render.routes import GATEWAY_GROUP
from ferry_operator.rollout import RolloutDecision, plan_rollout, probe_request
from ferry_operator.rollout_observed import rollout_input
from ferry_operator.spec import ModelDeployment, SpecError, parse_model_deployment
from ferry_operator.status import Observation, compute_status, desired_facts, status_changed

logger = logging.getLogger(__name__)

INVALID_SPEC = "InvalidSpec"
GATEWAY_API_UNAVAILABLE = "GatewayAPIUnavailable"
GATEWAY_RECHECK_S = 60.0
APPLY_FAILED = "ApplyFailed"
MANAGED_KINDS = frozenset(kind.kind for kind in CHILD_KINDS)


@dataclass(frozen=True)
class ChildRef:
    """An existing child, precisely enough to delete exactly that object."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str


@dataclass(frozen=True)
class Why:
    """Why a child is applied."""

    kind: Literal["missing", "changed", "drift"]
    """``missing``: absent; ``changed``: the spec asks for something else; ``drift``: someone
    else changed what Ferry manages."""
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}" if self.detail else self.kind


@dataclass(frozen=True)
class Plan:
    """What one reconcile will write (decided without any I/O)."""

    md: ModelDeployment | None
    blocked: Blocked | None = None
    apply: tuple[dict[str, Any], ...] = ()
    why: tuple[Why, ...] = ()
    """Why each manifest in :attr:`apply` is applied (same order), for the log."""
    prune: tuple[ChildRef, ...] = ()
    deployment: Mapping[str, Any] | None = None
    """The live Deployment, if any (its status feeds the ModelDeployment's)."""
    handover: tuple[dict[str, Any], ...] = ()
    """Applied first, as :data:`constants.REPLICAS_HANDOVER_MANAGER`: keeps the live replica
    count while Ferry stops owning it (autoscaling switched on)."""


def manifest_hash(manifest: Mapping[str, Any]) -> str:
    """Digest of a rendered manifest (independent of key order)."""
    canonical = json.dumps(manifest, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def with_applied_hash(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """``manifest`` carrying its own digest as an annotation (part of the applied body)."""
    digest = manifest_hash(manifest)
    metadata = dict(manifest.get("metadata") or {})
    metadata["annotations"] = {
        **(metadata.get("annotations") or {}),
        APPLIED_HASH_ANNOTATION: digest,
    }
    return {**manifest, "metadata": metadata}


class Memo:
    """Results worth not recomputing on every event, bounded:

    * the parsed and rendered spec per (ModelDeployment uid, generation): the spec of one
      generation never changes, and rendering depends on nothing else;
    * drift verdicts per (child uid, child resourceVersion, manifest hash): a child unchanged
      since the last look needs no second walk through its field set.
    """

    def __init__(self, size: int = 20_000) -> None:
        self.size = size
        self._entries: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[Any, ...]) -> tuple[bool, Any]:
        """(found, verdict)."""
        if key in self._entries:
            return True, self._entries[key]
        return False, None

    def put(self, key: tuple[Any, ...], value: Any) -> None:
        """Remember ``value``; forget the oldest half when full."""
        if len(self._entries) >= self.size:
            for old in list(self._entries)[: self.size // 2]:
                del self._entries[old]
        self._entries[key] = value


def apply_reason(
    manifest: Mapping[str, Any], live: Mapping[str, Any] | None, memo: Memo | None = None
) -> Why | None:
    """Why ``manifest`` must be applied over ``live``; ``None`` when ``live`` already matches."""
    if live is None:
        return Why("missing")
    metadata = live.get("metadata") or {}
    if metadata.get("deletionTimestamp"):
        return None  # being deleted: applying cannot stop that; re-created once it is gone
    wanted = ((manifest.get("metadata") or {}).get("annotations") or {}).get(
        APPLIED_HASH_ANNOTATION
    )
    if (metadata.get("annotations") or {}).get(APPLIED_HASH_ANNOTATION) != wanted:
        return Why("changed")
    key = ("drift", metadata.get("uid"), metadata.get("resourceVersion"), wanted)
    if memo is not None and key[2] is not None:
        found, cached = memo.get(key)
        if found:
            return cached if isinstance(cached, Why) else None
    owned = applied_fields(metadata.get("managedFields"), constants.FIELD_MANAGER)
    verdict: Why | None
    if owned is None:
        verdict = Why("drift", f"not applied by {constants.FIELD_MANAGER}")
    else:
        drifted = missing_fields(manifest, owned)
        verdict = (
            Why("drift", "changed by another field manager: " + ", ".join(drifted))
            if drifted
            else None
        )
    if memo is not None and key[2] is not None:
        memo.put(key, verdict)
    return verdict


def replicas_handover(
    manifest: Mapping[str, Any], live: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The apply that hands the live replica count over before Ferry stops owning it.

    When autoscaling is switched on, the rendered Deployment no longer sets ``spec.replicas``.
    Applied as is, server-side apply would remove the field Ferry owned, and the Deployment
    would fall back to 1 replica until the HPA's next sync. Applying the current value under a
    second field manager first makes that manager a co-owner, so the field survives Ferry
    letting go; the HPA's scale writes take it over from there.
    """
    if manifest.get("kind") != "Deployment" or live is None:
        return None
    if "replicas" in (manifest.get("spec") or {}):
        return None
    replicas = (live.get("spec") or {}).get("replicas")
    owned = applied_fields(
        (live.get("metadata") or {}).get("managedFields"), constants.FIELD_MANAGER
    )
    if replicas is None or owned is None or "f:replicas" not in (owned.get("f:spec") or {}):
        return None
    metadata = manifest["metadata"]
    return {
        "apiVersion": manifest["apiVersion"],
        "kind": "Deployment",
        "metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
        "spec": {"replicas": replicas},
    }


def _prunable(child: Mapping[str, Any], uid: str | None) -> bool:
    metadata = child.get("metadata") or {}
    return (
        child.get("kind") in MANAGED_KINDS
        and (metadata.get("labels") or {}).get(constants.LABEL_MANAGED_BY) == constants.MANAGED_BY
        and uid is not None
        and controller_uid(child) == uid
        and not metadata.get("deletionTimestamp")
    )


@dataclass(frozen=True)
class Rendered:
    """A spec, parsed and rendered (or why it could not be)."""

    md: ModelDeployment | None
    manifests: tuple[dict[str, Any], ...] = ()
    blocked: Blocked | None = None


def parse_owner(
    owner: Mapping[str, Any], memo: Memo | None = None
) -> tuple[ModelDeployment | None, Blocked | None]:
    """The ModelDeployment parsed (once per uid and generation), or why it cannot be."""
    metadata = owner.get("metadata") or {}
    key = ("parsed", metadata.get("uid"), metadata.get("generation"))
    found, cached = memo.get(key) if memo is not None else (False, None)
    if found and isinstance(cached, tuple):
        return cached
    try:
        result: tuple[ModelDeployment | None, Blocked | None] = (
            parse_model_deployment(owner),
            None,
        )
    except SpecError as error:
        result = (None, Blocked(INVALID_SPEC, str(error)))
    if memo is not None and None not in key:
        memo.put(key, result)
    return result


def _layout_key(layout: Layout | None) -> tuple[Any, ...] | None:
    """What a layout changes in the rendered children (templates are named by their hash)."""
    if layout is None:
        return None
    return (
        layout.hpa_target,
        tuple(
            (
                d.name,
                d.revision,
                d.replicas,
                d.track,
                revision_hash(d.rollback_template) if d.rollback_template else None,
            )
            for d in layout.deployments
        ),
    )


def _render(md: ModelDeployment, options: RenderOptions, layout: Layout | None) -> Rendered:
    try:
        manifests = tuple(with_applied_hash(m) for m in render_children(md, options, layout))
    except RenderError as error:
        return Rendered(md=md, blocked=Blocked(error.reason, str(error)))
    return Rendered(md=md, manifests=manifests)


def plan(
    owner: Mapping[str, Any],
    children: Sequence[Mapping[str, Any]],
    options: RenderOptions,
    memo: Memo | None = None,
    decision: RolloutDecision | None = None,
) -> Plan:
    """Decide the writes that bring ``children`` in line with ``owner``'s spec (and with the
    rollout ``decision``: which revisions run, with how many replicas)."""
    live = {
        (child.get("kind"), (child.get("metadata") or {}).get("name")): child for child in children
    }
    deployment = next((child for child in children if child.get("kind") == "Deployment"), None)
    md, blocked = parse_owner(owner, memo)
    if blocked is not None or md is None:
        return Plan(md=md, blocked=blocked, deployment=deployment)
    layout = decision.layout if decision is not None else None
    metadata = owner.get("metadata") or {}
    rendered_key = (
        "rendered",
        metadata.get("uid"),
        metadata.get("generation"),
        options,
        _layout_key(layout),
    )
    found, cached = memo.get(rendered_key) if memo is not None else (False, None)
    rendered = cached if found and isinstance(cached, Rendered) else _render(md, options, layout)
    if memo is not None and not found and None not in rendered_key[:4]:
        memo.put(rendered_key, rendered)
    manifests = rendered.manifests
    if rendered.blocked is not None:
        return Plan(md=md, blocked=rendered.blocked, deployment=deployment)
    main = decision.main if decision is not None else None
    keep = decision.keep if decision is not None else frozenset()

    to_apply: list[dict[str, Any]] = []
    handover: list[dict[str, Any]] = []
    why: list[Why] = []
    wanted: set[tuple[Any, Any]] = set()
    for manifest in manifests:
        key = (manifest["kind"], manifest["metadata"]["name"])
        wanted.add(key)
        reason = apply_reason(manifest, live.get(key), memo)
        if reason is not None:
            to_apply.append(manifest)
            why.append(reason)
            if (held := replicas_handover(manifest, live.get(key))) is not None:
                handover.append(held)
        if manifest["kind"] == "Deployment" and main in (None, key[1]):
            deployment = live.get(key)

    uid = md.metadata.uid
    prune = tuple(
        ChildRef(
            api_version=str(child.get("apiVersion")),
            kind=str(child.get("kind")),
            namespace=str(child["metadata"].get("namespace")),
            name=str(child["metadata"].get("name")),
            uid=str(child["metadata"].get("uid")),
        )
        for key, child in sorted(live.items(), key=lambda item: str(item[0]))
        if key not in wanted and _prunable(child, uid) and key[1] not in keep
    )
    return Plan(
        md=md,
        apply=tuple(to_apply),
        why=tuple(why),
        prune=prune,
        deployment=deployment,
        handover=tuple(handover),
    )


class Writer(Protocol):
    """The writes a reconcile makes (implemented by ``cluster.Cluster``)."""

    async def apply(
        self, manifest: Mapping[str, Any], field_manager: str = constants.FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply ``manifest`` as ``field_manager``; return the object as stored."""

    async def delete(self, child: ChildRef) -> None:
        """Delete exactly ``child`` (its uid as precondition); gone already is fine."""

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Merge-patch the ModelDeployment's status subresource; return the object."""

    async def post_event(self, event: Mapping[str, Any]) -> None:
        """Create a core/v1 Event."""

    async def serves(self, api_version: str, plural: str) -> bool:
        """Whether the API server serves ``plural`` in ``api_version`` (discovery)."""


class RepairGuard:
    """At most one drift repair per child per ``cooldown_s``.

    Restoring a child someone edited is right once; doing it again at once, when another
    controller keeps changing the same field back, would make the two fight in a tight loop.
    Missing children and spec changes are never held back.
    """

    def __init__(self, cooldown_s: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._last: dict[ObjectKey, float] = {}

    def admit(self, key: ObjectKey) -> float:
        """0 when a repair of ``key`` may go ahead now (and is recorded); else seconds to wait."""
        now = self._clock()
        wait = self._last.get(key, -self.cooldown_s) + self.cooldown_s - now
        if wait > 0:
            return wait
        self._last[key] = now
        if len(self._last) > 10_000:  # forget repairs long past
            self._last = {k: t for k, t in self._last.items() if now - t < self.cooldown_s}
        return 0.0


class RetryLater(Exception):  # noqa: N818 - a signal, not a failure of the operator
    """The reconcile did what it could; run it again after a backoff (an API refusal)."""

    def __init__(self, blocked: Blocked, cause: ApiError) -> None:
        self.blocked = blocked
        self.cause = cause
        super().__init__(blocked.message)


@dataclass
class Outcome:
    """What one reconcile did (for logs, metrics and tests)."""

    applied: list[str] = field(default_factory=list)
    pruned: list[str] = field(default_factory=list)
    status_written: bool = False
    events: int = 0
    handed_over: int = 0
    """Replica counts handed over before autoscaling took them (see :func:`replicas_handover`)."""
    blocked: Blocked | None = None
    requeue_after: float | None = None
    """Run again after this many seconds (a drift repair held back by the :class:`RepairGuard`)."""

    @property
    def writes(self) -> int:
        """API writes made."""
        return (
            len(self.applied)
            + len(self.pruned)
            + int(self.status_written)
            + self.events
            + self.handed_over
        )


def _status_patch(current: Mapping[str, Any], desired: Mapping[str, Any]) -> dict[str, Any]:
    """A merge patch that turns ``current`` into ``desired``: removed keys set to null, at
    every depth (a merge patch merges nested objects; lists are replaced whole)."""
    patch: dict[str, Any] = {key: None for key in current if key not in desired}
    for key, value in desired.items():
        before = current.get(key)
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            patch[key] = _status_patch(before, value)
        else:
            patch[key] = value
    return patch


async def reconcile(
    key: OwnerKey,
    view: ClusterView,
    writer: Writer,
    options: RenderOptions,
    *,
    now: Callable[[], str],
    instance: str,
    guard: RepairGuard | None = None,
    memo: Memo | None = None,
    prober: Prober | None = None,
) -> Outcome:
    """Bring ``key``'s children and status in line with its spec.

    Transient API errors propagate (the caller retries with backoff). A refusal by the API
    server is reported in the status and raised as :class:`RetryLater`.
    """
    outcome = Outcome()
    owner = view.owner(key)
    if owner is None or (owner.get("metadata") or {}).get("deletionTimestamp"):
        return outcome  # gone or going: garbage collection removes the children
    namespace, name = key
    instance_key: InstanceKey = (namespace, label_value(name))
    children = view.children(instance_key)
    pods = view.pods(instance_key)
    decision = await decide_rollout(
        owner, children, pods, options, now=now(), memo=memo, prober=prober
    )
    decided = _held_back(plan(owner, children, options, memo, decision), guard, outcome)
    if decided.blocked is None and (missing := await _gateway_refusal(decided.md, writer)):
        decided = Plan(md=decided.md, blocked=missing, deployment=decided.deployment)
        outcome.requeue_after = GATEWAY_RECHECK_S  # the Gateway API may be installed later
    blocked, refusal = decided.blocked, None
    deployment = decided.deployment

    if blocked is None:
        try:
            for held in decided.handover:  # before the apply that drops the field
                await writer.apply(held, field_manager=constants.REPLICAS_HANDOVER_MANAGER)
                outcome.handed_over += 1
            deployment = (
                await _apply_all(decided, view, writer, instance_key, outcome) or deployment
            )
            for child in decided.prune:
                await writer.delete(child)
                view.overlay.deleted((child.kind, child.namespace, child.name), instance_key)
                outcome.pruned.append(f"{child.kind}/{child.name}")
        except ApiError as error:
            if error.transient:
                raise
            refusal = error
            blocked = Blocked(APPLY_FAILED, f"the API server refused a child: {error}", retry=True)
    outcome.blocked = blocked

    md = decided.md
    facts = desired_facts(md) if md is not None and blocked is None else {}
    autoscaled = md is not None and md.spec.autoscaling is not None
    observation = Observation(
        generation=int((owner.get("metadata") or {}).get("generation") or 1),
        blocked=blocked,
        deployment=deployment,
        pods=pods,
        expected_replicas=md.spec.replicas if md is not None and not autoscaled else None,
        min_replicas=(
            md.spec.autoscaling.min_replicas
            if md is not None and md.spec.autoscaling is not None
            else None
        ),
        selector=facts.get("selector"),
        url=facts.get("url"),
        model=facts.get("model"),
        **(_rollout_facts(decision, view.children(instance_key)) if blocked is None else {}),
    )
    current = owner.get("status") or {}
    desired = compute_status(observation, current, now())
    if status_changed(current, desired):
        try:
            stored = await writer.patch_status(namespace, name, _status_patch(current, desired))
        except ApiError as error:
            if error.not_found:
                return outcome  # deleted meanwhile
            raise
        view.overlay.wrote((constants.KIND, namespace, name), trim_owner(stored), None)
        outcome.status_written = True
        for notice in notices(current, desired):
            try:
                await writer.post_event(event_body(owner, notice, now=now(), instance=instance))
                outcome.events += 1
            except ApiError as error:  # an Event is best effort: never retry a reconcile for it
                logger.warning("could not post event %s for %s/%s: %s", notice.reason, *key, error)
    if decision is not None and blocked is None:
        outcome.events += await _post_rollout_notices(decision, owner, writer, now, instance)
        if decision.requeue_after is not None:
            outcome.requeue_after = min(
                outcome.requeue_after or decision.requeue_after, decision.requeue_after
            )
    if refusal is not None and blocked is not None:
        raise RetryLater(blocked, refusal)
    return outcome


async def _gateway_refusal(md: ModelDeployment | None, writer: Writer) -> Blocked | None:
    """Why a spec naming a Gateway cannot be served here: the Gateway API's routes are not
    installed. ``None`` when no Gateway is named or the routes are served."""
    gateway = md.spec.rollout.gateway if md is not None else None
    if gateway is None:
        return None
    missing = [
        f"{kind.kind} ({kind.api_version})"
        for kind in CHILD_KINDS
        if kind.group == GATEWAY_GROUP and not await writer.serves(kind.api_version, kind.plural)
    ]
    if not missing:
        return None
    return Blocked(
        GATEWAY_API_UNAVAILABLE,
        f"spec.rollout.gateway names Gateway {gateway.name!r}, but this cluster does not serve "
        f"{' and '.join(missing)}: install the Gateway API CRDs and a Gateway implementation, "
        "or remove spec.rollout.gateway to split traffic by ready replicas",
    )


async def decide_rollout(
    owner: Mapping[str, Any],
    children: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    options: RenderOptions,
    *,
    now: str,
    memo: Memo | None = None,
    prober: Prober | None = None,
) -> RolloutDecision | None:
    """Ask the rollout planner which revisions run (reading the runtime pods first when it
    needs their metrics or model signatures); ``None`` for a spec that cannot be parsed."""
    md, blocked = parse_owner(owner, memo)
    if md is None or blocked is not None:
        return None
    inputs = rollout_input(md, options, children, pods, status=owner.get("status") or {}, now=now)
    request = probe_request(inputs)
    if prober is not None and (request.figures_of or request.signatures_of):
        probes = await prober.probe((md.metadata.namespace, md.metadata.name), request, pods)
        inputs = dataclasses.replace(inputs, probes=probes)
    return plan_rollout(inputs)


def _rollout_facts(
    decision: RolloutDecision | None, children: Sequence[Mapping[str, Any]]
) -> dict[str, Any]:
    """The Observation fields a rollout decision fills."""
    if decision is None:
        return {}
    return {
        "report": decision.report,
        "rollout": decision.rollout,
        "revisions": decision.revisions,
        "deployments": [c for c in children if c.get("kind") == "Deployment"],
        "current_revision": decision.rollout.get("currentRevision"),
    }


async def _post_rollout_notices(
    decision: RolloutDecision,
    owner: Mapping[str, Any],
    writer: Writer,
    now: Callable[[], str],
    instance: str,
) -> int:
    """Post the decision's Events (steps passed, promotion); best effort."""
    posted = 0
    for notice in decision.notices:
        body = event_body(owner, notice, now=now(), instance=instance)
        try:
            await writer.post_event(body)
            posted += 1
        except ApiError as error:
            logger.warning("could not post event %s: %s", notice.reason, error)
    return posted


def _held_back(decided: Plan, guard: RepairGuard | None, outcome: Outcome) -> Plan:
    """``decided`` without the drift repairs ``guard`` holds back (noted in ``outcome``)."""
    if guard is None or not any(why.kind == "drift" for why in decided.why):
        return decided
    keep: list[tuple[dict[str, Any], Why]] = []
    for manifest, why in zip(decided.apply, decided.why, strict=True):
        wait = guard.admit(object_key(manifest)) if why.kind == "drift" else 0.0
        if wait > 0:
            outcome.requeue_after = min(outcome.requeue_after or wait, wait)
            logger.info("holding back repair of %s %s for %.1fs", *object_key(manifest)[::2], wait)
        else:
            keep.append((manifest, why))
    return dataclasses.replace(
        decided, apply=tuple(m for m, _ in keep), why=tuple(w for _, w in keep)
    )


async def _apply_all(
    decided: Plan,
    view: ClusterView,
    writer: Writer,
    instance_key: InstanceKey,
    outcome: Outcome,
) -> Snapshot | None:
    """Apply the planned manifests concurrently; remember each result. Returns the Deployment
    as stored, if it was applied."""
    results = await asyncio.gather(
        *(writer.apply(manifest) for manifest in decided.apply), return_exceptions=True
    )
    deployment: Snapshot | None = None
    failure: BaseException | None = None
    for manifest, reason, result in zip(decided.apply, decided.why, results, strict=True):
        if isinstance(result, BaseException):
            failure = failure or result
            continue
        snapshot = trim_child(result)
        key: ObjectKey = object_key(result) if result.get("kind") else object_key(manifest)
        view.overlay.wrote(key, snapshot, instance_key)
        outcome.applied.append(f"{manifest['kind']}/{manifest['metadata']['name']} ({reason})")
        if manifest["kind"] == "Deployment":
            deployment = snapshot
    if failure is not None:
        raise failure
    return deployment

"""Pure: what the rollout planner is given — the live model Deployments (which revision each
runs, from its labels and template annotation), what the runtime pods reported, and the
revision history kept in ``status.revisions``."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from ferry_operator import constants
from ferry_operator.analysis import Figures, Signature
from ferry_operator.render.options import RenderOptions
from ferry_operator.render.revision import (
    Template,
    parse_template,
    revision_hash,
    revision_template,
    with_template,
)
from ferry_operator.spec import ModelDeployment
from ferry_operator.status import (
    CONTAINER_CONFIG_ERROR,
    CRASH_LOOP_BACK_OFF,
    IMAGE_PULL_BACK_OFF,
    MODEL_LOAD_FAILED,
    PROGRESS_DEADLINE_EXCEEDED,
    pod_problem,
)

MAX_REVISIONS = 10
STUCK_REASONS = frozenset(
    {IMAGE_PULL_BACK_OFF, MODEL_LOAD_FAILED, CRASH_LOOP_BACK_OFF, CONTAINER_CONFIG_ERROR}
)
"""Pod problems that mean a new revision will not become ready without a change."""


@dataclass(frozen=True)
class LiveDeployment:
    """A model Deployment as last seen."""

    name: str
    revision: str | None
    template: Template | None
    rollback_template: Template | None = None
    track: str | None = None
    replicas: int = 0
    ready: int = 0
    updated: int = 0
    available: int = 0
    current: bool = True
    """The Deployment controller has seen its latest spec."""
    deadline_exceeded: bool = False

    @property
    def complete(self) -> bool:
        """Every replica runs the latest template and is available."""
        return (
            self.current
            and self.updated >= self.replicas
            and self.available >= self.replicas
            and self.ready >= self.replicas
        )

    @classmethod
    def from_snapshot(cls, body: Mapping[str, Any]) -> LiveDeployment:
        """From a Deployment snapshot (``observed.trim_child``)."""
        metadata = body.get("metadata") or {}
        labels = metadata.get("labels") or {}
        annotations = metadata.get("annotations") or {}
        status = body.get("status") or {}
        spec = body.get("spec") or {}
        generation = metadata.get("generation")
        observed = status.get("observedGeneration")
        deadline = any(
            isinstance(c, Mapping)
            and c.get("type") == "Progressing"
            and c.get("status") == "False"
            and c.get("reason") == PROGRESS_DEADLINE_EXCEEDED
            for c in status.get("conditions") or ()
        )
        return cls(
            name=str(metadata.get("name")),
            revision=labels.get(constants.LABEL_REVISION),
            template=parse_template(annotations.get(constants.TEMPLATE_ANNOTATION)),
            rollback_template=parse_template(
                annotations.get(constants.ROLLBACK_TEMPLATE_ANNOTATION)
            ),
            track=labels.get(constants.LABEL_TRACK),
            replicas=int(spec.get("replicas", status.get("replicas") or 0)),
            ready=int(status.get("readyReplicas") or 0),
            updated=int(status.get("updatedReplicas") or 0),
            available=int(status.get("availableReplicas") or 0),
            current=generation is None or (observed is not None and observed >= generation),
            deadline_exceeded=deadline,
        )


@dataclass(frozen=True)
class Probes:
    """What the runtime pods reported."""

    figures: Figures | None = None
    """Request outcomes and latency of the current revision's ready pods."""
    signatures: Mapping[str, Signature] = field(default_factory=dict)
    """Model signature by revision (read from one ready pod of each)."""


@dataclass(frozen=True)
class ProbeRequest:
    """What the reconcile should read from the runtime pods before planning."""

    figures_of: str | None = None
    """Revision whose ready pods' metrics to read."""
    signatures_of: tuple[str, ...] = ()
    """Revisions whose model signature to read."""
    targets: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    """Served model name and HTTP port of each revision named above (from its template)."""


def served_target(md: ModelDeployment, template: Template | None) -> tuple[str, int]:
    """(served model name, HTTP port) of the pods a template makes."""
    model = (template or {}).get("model") or {}
    protocols = ((template or {}).get("runtime") or {}).get("protocols") or {}
    name = str(model.get("name") or md.metadata.name)
    return name, int(protocols.get("httpPort") or constants.DEFAULT_HTTP_PORT)


@dataclass(frozen=True)
class RolloutInput:
    """Everything one decision is made from."""

    md: ModelDeployment
    template: Template
    """The spec's template (its hash is the current revision)."""
    deployments: tuple[LiveDeployment, ...] = ()
    pods: Sequence[Mapping[str, Any]] = ()
    previous: Mapping[str, Any] = field(default_factory=dict)
    """The ModelDeployment's current ``status``."""
    probes: Probes = field(default_factory=Probes)
    now: str = "1970-01-01T00:00:00Z"
    """RFC 3339 UTC."""

    @property
    def revision(self) -> str:
        """The current revision."""
        return revision_hash(self.template)


def _renderable(md: ModelDeployment, live: LiveDeployment) -> LiveDeployment:
    """``live`` without the templates that no longer make a valid spec (an annotation edited
    by hand, or written by an operator version whose API differed): such a Deployment is left
    as it is rather than rendered from a guess."""

    def valid(template: Template | None) -> Template | None:
        if template is None:
            return None
        try:
            with_template(md, template)
        except ValidationError:
            return None
        return template

    return dataclasses.replace(
        live, template=valid(live.template), rollback_template=valid(live.rollback_template)
    )


def rollout_input(
    md: ModelDeployment,
    options: RenderOptions,
    children: Sequence[Mapping[str, Any]],
    pods: Sequence[Mapping[str, Any]],
    *,
    status: Mapping[str, Any],
    now: str,
) -> RolloutInput:
    """The planner's input from what the reconcile sees (children of every kind, pods and the
    ModelDeployment's status); probes are added once read."""
    deployments = tuple(
        _renderable(md, LiveDeployment.from_snapshot(child))
        for child in children
        if child.get("kind") == "Deployment"
        and not (child.get("metadata") or {}).get("deletionTimestamp")
    )
    return RolloutInput(
        md=md,
        template=revision_template(md, options),
        deployments=deployments,
        pods=pods,
        previous=status,
        now=now,
    )


def revision_pods(pods: Sequence[Mapping[str, Any]], revision: str) -> list[Mapping[str, Any]]:
    """The pods labelled with ``revision``."""
    return [
        pod
        for pod in pods
        if ((pod.get("metadata") or {}).get("labels") or {}).get(constants.LABEL_REVISION)
        == revision
    ]


def stuck(deployment: LiveDeployment | None, pods: Sequence[Mapping[str, Any]]) -> str | None:
    """Why ``deployment``'s new pods will not become ready without a change, if they won't."""
    if deployment is None or deployment.revision is None:
        return None
    problem = pod_problem(revision_pods(pods, deployment.revision))
    if problem is not None and problem[0] in STUCK_REASONS:
        return f"{problem[0]}: {problem[1]}"
    if deployment.deadline_exceeded:
        return f"{PROGRESS_DEADLINE_EXCEEDED}: Deployment {deployment.name!r} made no progress"
    return None


class History:
    """``status.revisions``: newest first, at most :data:`MAX_REVISIONS`."""

    def __init__(self, records: Any) -> None:
        self.records: list[dict[str, Any]] = [
            dict(record) for record in records or () if isinstance(record, Mapping)
        ][:MAX_REVISIONS]

    def get(self, revision: str | None) -> dict[str, Any] | None:
        """The record of ``revision``."""
        return next((r for r in self.records if r.get("name") == revision), None)

    def see(self, revision: str, template: Template) -> dict[str, Any]:
        """The record of ``revision``, added (Progressing) when new."""
        record = self.get(revision)
        if record is None:
            model = template.get("model") or {}
            record = {
                "name": revision,
                "model": str(model.get("uri", "")),
                "version": str(model.get("version", "")),
                "image": str((template.get("runtime") or {}).get("image", "")),
                "outcome": "Progressing",
            }
            if model.get("sha256"):
                record["sha256"] = model["sha256"]
            for other in self.records:
                if other.get("outcome") == "Progressing":
                    other["outcome"] = "Superseded"
            self.records.insert(0, record)
            del self.records[MAX_REVISIONS:]
        return record

    def served(self, revision: str | None, now: str) -> None:
        """Note that ``revision`` has ready pods."""
        record = self.get(revision)
        if record is not None and not record.get("firstServed"):
            record["firstServed"] = now

    def serving(self, revision: str) -> None:
        """``revision`` is now the stable one: the one before is superseded."""
        for record in self.records:
            if record.get("name") == revision:
                record["outcome"] = "Serving"
                record.pop("reason", None)
                record.pop("message", None)
            elif record.get("outcome") == "Serving":
                record["outcome"] = "Superseded"

    def abort(self, revision: str, reason: str, message: str) -> None:
        """``revision`` was stopped."""
        record = self.get(revision)
        if record is not None:
            record.update(outcome="Aborted", reason=reason, message=message[:1024])

    def aborted(self, revision: str) -> dict[str, Any] | None:
        """The record of ``revision`` when it was aborted."""
        record = self.get(revision)
        return record if record is not None and record.get("outcome") == "Aborted" else None

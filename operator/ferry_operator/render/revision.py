"""Revisions: the spec fields that make the pods, their short hash, and the layout of the
Deployments that run them.

A *revision* is one distinct pod template: model (uri, sha256, version, format), runtime (image,
device, threads, frontend processes, env, ports), resources, scheduling and batching. Replicas,
autoscaling, the Service and the rollout settings are not part of it: changing them starts no
rollout.

Each Deployment carries the template it runs as an annotation, so that the operator can render
it again (to change its replicas) while the spec already asks for another revision.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ferry_operator.render.names import MAX_NAME_LENGTH, child_name, dns_label_name
from ferry_operator.render.options import RenderOptions
from ferry_operator.spec import ModelDeployment, ModelDeploymentSpec

TEMPLATE_FIELDS = ("model", "runtime", "resources", "scheduling", "batching")
REVISION_LENGTH = 10

Template = Mapping[str, Any]


def revision_template(md: ModelDeployment, options: RenderOptions) -> dict[str, Any]:
    """The spec fields that make ``md``'s pods, as set (defaults left out, so a field added
    to the API later does not make every existing object a new revision), with the runtime
    image made explicit (a new default image in the operator's settings is a new revision)."""
    dumped = md.spec.model_dump(
        mode="json", by_alias=True, exclude_none=True, exclude_defaults=True
    )
    template = {key: dumped[key] for key in TEMPLATE_FIELDS if key in dumped}
    runtime = dict(template.get("runtime") or {})
    runtime["image"] = md.spec.runtime.image or options.runtime_image
    template["runtime"] = runtime
    return template


def template_json(template: Template) -> str:
    """Canonical JSON of a template (the annotation's value)."""
    return json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def revision_hash(template: Template) -> str:
    """Short, stable name of a template."""
    return hashlib.sha256(template_json(template).encode()).hexdigest()[:REVISION_LENGTH]


def parse_template(text: str | None) -> dict[str, Any] | None:
    """A template read back from an annotation; ``None`` when absent or unreadable."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "model" in value else None


def with_template(md: ModelDeployment, template: Template) -> ModelDeployment:
    """``md`` with its pod-making fields replaced by ``template`` (an earlier revision's)."""
    dumped = md.spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    dumped.update({key: template[key] for key in TEMPLATE_FIELDS if key in template})
    spec = ModelDeploymentSpec.model_validate(dumped)
    return md.model_copy(update={"spec": spec})


def revision_deployment_name(md: ModelDeployment, revision: str) -> str:
    """Name of a Deployment made for ``revision`` beside the serving one."""
    base = child_name(md)[: MAX_NAME_LENGTH - REVISION_LENGTH - 1].rstrip("-")
    return dns_label_name(f"{base}-{revision}")


@dataclass(frozen=True)
class RevisionDeployment:
    """One Deployment to render: which revision it runs and how many pods."""

    name: str
    revision: str
    template: Template
    replicas: int | None
    """``None`` when an HPA owns the count (the field is left out)."""
    track: str | None = None
    """Extra selector label value for a Deployment made beside another; ``None`` for the
    ModelDeployment's first Deployment (whose selector predates revisions)."""
    rollback_template: Template | None = None
    """During a rolling update: the last good template, to roll back to."""


@dataclass(frozen=True)
class RouteBackend:
    """A revision's share of the traffic routed through the Gateway."""

    revision: str
    weight: int


@dataclass(frozen=True)
class Layout:
    """Every model Deployment to render, the one the HPA scales, and (with a Gateway) each
    revision's route weight."""

    deployments: tuple[RevisionDeployment, ...]
    hpa_target: str
    routes: tuple[RouteBackend, ...] = ()


def single_layout(md: ModelDeployment, options: RenderOptions) -> Layout:
    """One Deployment running the spec's revision (no rollout history to honour)."""
    template = revision_template(md, options)
    name = child_name(md)
    replicas = md.spec.replicas if md.spec.autoscaling is None else None
    revision = revision_hash(template)
    deployment = RevisionDeployment(name, revision, template, replicas)
    routes = (RouteBackend(revision, 100),) if md.spec.rollout.gateway is not None else ()
    return Layout(deployments=(deployment,), hpa_target=name, routes=routes)

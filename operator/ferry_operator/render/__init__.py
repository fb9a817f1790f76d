"""Pure builders: one ModelDeployment → the Kubernetes objects that serve it.

Plain dicts out, deterministic (same spec → same objects, keys sorted), no I/O and no
Kubernetes client: ``ferry_operator.cluster`` applies what these return.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from ferry_operator.render.deployment import render_deployment
from ferry_operator.render.errors import RenderError
from ferry_operator.render.hpa import render_hpa
from ferry_operator.render.names import child_name
from ferry_operator.render.options import RenderOptions
from ferry_operator.render.pdb import render_pdb
from ferry_operator.render.revision import Layout, single_layout
from ferry_operator.render.routes import render_revision_service, render_routes
from ferry_operator.render.service import render_service
from ferry_operator.spec import ModelDeployment

__all__ = [
    "CHILD_KINDS",
    "ChildKind",
    "Layout",
    "RenderError",
    "RenderOptions",
    "child_name",
    "render_children",
    "render_warnings",
]


class ChildKind(NamedTuple):
    """A kind of object the operator may own."""

    api_version: str
    kind: str
    plural: str

    @property
    def group(self) -> str:
        """API group ("" for the core group)."""
        return self.api_version.rpartition("/")[0]

    @property
    def version(self) -> str:
        """API version without the group."""
        return self.api_version.rpartition("/")[2]


CHILD_KINDS: tuple[ChildKind, ...] = (
    ChildKind("apps/v1", "Deployment", "deployments"),
    ChildKind("v1", "Service", "services"),
    ChildKind("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
    ChildKind("policy/v1", "PodDisruptionBudget", "poddisruptionbudgets"),
    ChildKind("gateway.networking.k8s.io/v1", "HTTPRoute", "httproutes"),
    ChildKind("gateway.networking.k8s.io/v1", "GRPCRoute", "grpcroutes"),
)
"""Every kind :func:`render_children` can return, in apply order, so the reconciler can prune
kinds a spec no longer asks for (e.g. the HPA after autoscaling is turned off)."""


def render_children(
    md: ModelDeployment, options: RenderOptions, layout: Layout | None = None
) -> list[dict[str, Any]]:
    """The Deployment(s) of ``layout`` (by default one, running the spec's revision), the
    Service selecting them all, then the HPA (with autoscaling), the PDB (when more than one
    replica can run) and, with a Gateway, a Service per revision and the weighted HTTPRoute and
    GRPCRoute. Raises :class:`RenderError` for a spec Ferry cannot serve."""
    layout = layout or single_layout(md, options)
    children = [render_deployment(md, options, revision) for revision in layout.deployments]
    children.append(render_service(md, options))
    for optional in (render_hpa(md, options, layout.hpa_target), render_pdb(md, options)):
        if optional is not None:
            children.append(optional)
    if md.spec.rollout.gateway is not None:
        children += [render_revision_service(md, options, b.revision) for b in layout.routes]
        children += render_routes(md, options, layout.routes)
    return [_canonical(child) for child in children]


def render_warnings(md: ModelDeployment) -> list[str]:
    """Problems that do not stop rendering but deserve an Event or a condition message."""
    warnings: list[str] = []
    spec = md.spec
    if spec.autoscaling is not None:
        if "cpu" not in spec.resources.requests:
            warnings.append(
                "spec.autoscaling: spec.resources.requests.cpu is not set; the HPA measures "
                "CPU utilisation against the request and cannot scale without one (unless a "
                "LimitRange supplies a default)"
            )
        if "replicas" in spec.model_fields_set:
            warnings.append(
                "spec.replicas is ignored while spec.autoscaling is set; the HPA owns the "
                "replica count"
            )
    return warnings


def _canonical(value: Any) -> Any:
    """Copy with every mapping's keys sorted, so output never depends on input dict order."""
    if isinstance(value, Mapping):
        return {key: _canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    return value

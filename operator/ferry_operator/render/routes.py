"""Exact traffic weights through the Gateway API: a Service per revision, and an HTTPRoute and a
GRPCRoute whose backends are those Services, weighted as the rollout decides."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ferry_operator import constants
from ferry_operator.render.labels import child_labels, selector_labels
from ferry_operator.render.meta import child_metadata
from ferry_operator.render.options import RenderOptions
from ferry_operator.render.revision import RouteBackend, revision_deployment_name
from ferry_operator.render.service import service_ports
from ferry_operator.spec import GatewayRef, ModelDeployment

GATEWAY_GROUP = "gateway.networking.k8s.io"
GATEWAY_API_VERSION = f"{GATEWAY_GROUP}/v1"


def revision_service_name(md: ModelDeployment, revision: str) -> str:
    """The Service that selects exactly the pods of ``revision``."""
    return revision_deployment_name(md, revision)


def render_revision_service(
    md: ModelDeployment, options: RenderOptions, revision: str
) -> dict[str, Any]:
    """A ClusterIP Service for the pods of one revision (a weighted route backend)."""
    metadata = child_metadata(md, options)
    metadata["name"] = revision_service_name(md, revision)
    metadata["labels"] = {**child_labels(md), constants.LABEL_REVISION: revision}
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {
            "type": "ClusterIP",
            "selector": {**selector_labels(md), constants.LABEL_REVISION: revision},
            "ports": service_ports(md),
        },
    }


def _parent(gateway: GatewayRef, section: str | None) -> dict[str, Any]:
    parent: dict[str, Any] = {"group": GATEWAY_GROUP, "kind": "Gateway", "name": gateway.name}
    if gateway.namespace is not None:
        parent["namespace"] = gateway.namespace
    if section is not None:
        parent["sectionName"] = section
    return parent


def render_routes(
    md: ModelDeployment, options: RenderOptions, backends: Sequence[RouteBackend]
) -> list[dict[str, Any]]:
    """HTTPRoute (REST) and GRPCRoute to the revisions' Services; none without a gateway."""
    gateway = md.spec.rollout.gateway
    if gateway is None or not backends:
        return []
    routes = []
    for kind, section, port in (
        ("HTTPRoute", gateway.http_section_name, md.spec.service.http_port),
        ("GRPCRoute", gateway.grpc_section_name, md.spec.service.grpc_port),
    ):
        refs = [
            {
                "group": "",
                "kind": "Service",
                "name": revision_service_name(md, backend.revision),
                "port": port,
                "weight": backend.weight,
            }
            for backend in backends
        ]
        routes.append(
            {
                "apiVersion": GATEWAY_API_VERSION,
                "kind": kind,
                "metadata": child_metadata(md, options),
                "spec": {
                    "parentRefs": [_parent(gateway, section)],
                    "rules": [{"backendRefs": refs}],
                },
            }
        )
    return routes

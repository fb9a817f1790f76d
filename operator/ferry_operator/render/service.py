"""The Service in front of the model pods."""

from __future__ import annotations

from typing import Any

from ferry_operator.render.deployment import GRPC_PORT_NAME, HTTP_PORT_NAME
from ferry_operator.render.labels import selector_labels
from ferry_operator.render.meta import child_metadata
from ferry_operator.render.options import RenderOptions
from ferry_operator.spec import ModelDeployment

# Kubernetes-defined appProtocol for HTTP/2 over cleartext (gRPC without TLS); Gateway API
# implementations and meshes use it to pick an HTTP/2 upstream.
GRPC_APP_PROTOCOL = "kubernetes.io/h2c"


def render_service(md: ModelDeployment, options: RenderOptions) -> dict[str, Any]:
    """v1 Service with named ``http`` and ``grpc`` ports targeting the container ports by
    name, so the container ports can change without touching the Service."""
    service = md.spec.service
    annotations = dict(sorted(service.annotations.items()))
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": child_metadata(md, options, annotations=annotations),
        "spec": {
            "type": service.type,
            "selector": selector_labels(md),
            "ports": service_ports(md),
        },
    }


def service_ports(md: ModelDeployment) -> list[dict[str, Any]]:
    """The named ``http`` and ``grpc`` ports (targeting the container ports by name)."""
    service = md.spec.service
    return [
        {
            "name": HTTP_PORT_NAME,
            "port": service.http_port,
            "targetPort": HTTP_PORT_NAME,
            "protocol": "TCP",
            "appProtocol": "http",
        },
        {
            "name": GRPC_PORT_NAME,
            "port": service.grpc_port,
            "targetPort": GRPC_PORT_NAME,
            "protocol": "TCP",
            "appProtocol": GRPC_APP_PROTOCOL,
        },
    ]

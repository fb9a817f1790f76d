"""Gateway API routing (pure): a Service per revision and weighted HTTPRoute / GRPCRoute."""

from __future__ import annotations

from typing import Any

from ferry_operator import constants
from ferry_operator.render import RenderOptions, render_children
from ferry_operator.render.revision import (
    Layout,
    RevisionDeployment,
    RouteBackend,
    revision_template,
    single_layout,
)
from ferry_operator.spec import ModelDeployment, parse_model_deployment

OPTIONS = RenderOptions(runtime_image="registry.test/ferry-runtime:1")


def make_md(**rollout: Any) -> ModelDeployment:
    return parse_model_deployment(
        {
            "apiVersion": "serving.ferry.dev/v1alpha1",
            "kind": "ModelDeployment",
            "metadata": {"name": "mlp", "namespace": "ml", "uid": "u1"},
            "spec": {
                "model": {"uri": "s3://models/mlp/"},
                "service": {"httpPort": 80, "grpcPort": 9000},
                "rollout": rollout,
            },
        }
    )


def by_kind(children: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    found: dict[str, list[dict[str, Any]]] = {}
    for child in children:
        found.setdefault(child["kind"], []).append(child)
    return found


def test_no_gateway_no_routes() -> None:
    kinds = by_kind(render_children(make_md(), OPTIONS))
    assert set(kinds) == {"Deployment", "Service"}
    assert len(kinds["Service"]) == 1


def test_routes_weight_each_revision_service() -> None:
    md = make_md(
        strategy="Canary",
        steps=[{"weight": 20}],
        gateway={
            "name": "edge",
            "namespace": "gateways",
            "httpSectionName": "http",
            "grpcSectionName": "grpc",
        },
    )
    template = revision_template(md, OPTIONS)
    layout = Layout(
        deployments=(
            RevisionDeployment("mlp", "aaaa", template, 4),
            RevisionDeployment("mlp-bbbb", "bbbb", template, 1, track="bbbb"),
        ),
        hpa_target="mlp",
        routes=(RouteBackend("aaaa", 80), RouteBackend("bbbb", 20)),
    )
    kinds = by_kind(render_children(md, OPTIONS, layout))
    services = {s["metadata"]["name"]: s for s in kinds["Service"]}
    assert set(services) == {"mlp", "mlp-aaaa", "mlp-bbbb"}
    # The shared Service selects every revision; each revision's Service only its own pods.
    assert constants.LABEL_REVISION not in services["mlp"]["spec"]["selector"]
    assert services["mlp-bbbb"]["spec"]["selector"][constants.LABEL_REVISION] == "bbbb"
    assert services["mlp-bbbb"]["spec"]["ports"] == services["mlp"]["spec"]["ports"]
    assert services["mlp-bbbb"]["spec"]["type"] == "ClusterIP"
    [http] = kinds["HTTPRoute"]
    [grpc] = kinds["GRPCRoute"]
    assert http["apiVersion"] == grpc["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert http["metadata"]["name"] == grpc["metadata"]["name"] == "mlp"
    assert http["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert http["spec"]["parentRefs"] == [
        {
            "group": "gateway.networking.k8s.io",
            "kind": "Gateway",
            "name": "edge",
            "namespace": "gateways",
            "sectionName": "http",
        }
    ]
    assert grpc["spec"]["parentRefs"][0]["sectionName"] == "grpc"
    assert http["spec"]["rules"] == [
        {
            "backendRefs": [
                {"group": "", "kind": "Service", "name": "mlp-aaaa", "port": 80, "weight": 80},
                {"group": "", "kind": "Service", "name": "mlp-bbbb", "port": 80, "weight": 20},
            ]
        }
    ]
    assert [ref["port"] for ref in grpc["spec"]["rules"][0]["backendRefs"]] == [9000, 9000]


def test_single_revision_takes_all_the_route() -> None:
    md = make_md(gateway={"name": "edge"})
    layout = single_layout(md, OPTIONS)
    [backend] = layout.routes
    assert backend.weight == 100
    kinds = by_kind(render_children(md, OPTIONS))
    [http] = kinds["HTTPRoute"]
    assert http["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"}
    ]
    assert http["spec"]["rules"][0]["backendRefs"][0]["name"] == f"mlp-{backend.revision}"

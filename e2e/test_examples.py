"""Every example in examples/: applied, reconciled into the children the renderer describes,
reported in status, Ready, serving through its Service, and collected when deleted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_examples import EXAMPLES, ExampleCase, adapt, load, store_url
from e2e_kube import ClusterFacts, Kube, Operator, Settings, ready_md, wait_for
from e2e_manifests import credentials_secret, filled_claim
from e2e_models import ModelVersion
from e2e_serving import (
    check_child,
    ferry_manages_replicas,
    infer_through_service,
    live_children,
    no_children_left,
)
from ferry_operator.render import RenderOptions, render_children
from ferry_operator.spec import parse_model_deployment

CONDITIONS = ("Ready", "Progressing", "Degraded")


@pytest.fixture(scope="module", params=EXAMPLES, ids=lambda path: path.stem)
def case(
    request: pytest.FixtureRequest,
    kube: Kube,
    ns: str,
    *,
    ferry: Operator,
    store: str,
    models: dict[str, ModelVersion],
    facts: ClusterFacts,
    settings: Settings,
) -> Iterator[ExampleCase]:
    """One example, adapted to the test cluster and created; deleted afterwards."""
    source = request.param
    example = adapt(
        load(source),
        source,
        namespace=ns,
        archive_path=models["1"].store_path,
        digests={version: model.sha256 for version, model in models.items()},
    )
    if example.credentials_secret:
        kube.apply([credentials_secret(ns, example.credentials_secret)])
    if example.claim and facts.default_storage_class and facts.can_run_pods():
        claim, path = example.claim
        archive = store_url(ns, models[example.model_version].store_path)
        kube.apply(filled_claim(ns, claim, path, archive, settings.runtime_image))
        wait_for(
            lambda: (
                (kube.kubectl("-n", ns, "get", "job", f"fill-{claim}", "-o", "json").stdout)
                .replace(" ", "")
                .count('"type":"Complete"')
            ),
            timeout=settings.timeout,
            what=f"the Job filling claim {claim}",
            details=lambda: kube.kubectl("-n", ns, "describe", "job", f"fill-{claim}").stdout,
        )
    kube.create_md(example.body)
    yield example
    kube.delete_md(ns, example.name)


def _md(kube: Kube, case: ExampleCase) -> dict[str, Any]:
    md = kube.get_md(case.body["metadata"]["namespace"], case.name)
    assert md is not None, f"{case.name} vanished"
    return md


def test_children_are_the_rendered_ones_owned_and_applied_by_ferry(
    kube: Kube, case: ExampleCase, settings: Settings
) -> None:
    ns = case.body["metadata"]["namespace"]
    md = _md(kube, case)
    rendered = render_children(
        parse_model_deployment(md), RenderOptions(runtime_image=settings.runtime_image)
    )
    expected = {(child["kind"], child["metadata"]["name"]) for child in rendered}

    def applied() -> bool:
        live = live_children(kube, ns, case.name)
        found = {(kind, item.metadata.name) for kind, items in live.items() for item in items}
        return found == expected

    wait_for(applied, timeout=30, what=f"children {sorted(expected)} of {case.name}")
    for items in live_children(kube, ns, case.name).values():
        for child in items:
            check_child(child, md)

    deployment = kube.apps.read_namespaced_deployment(case.name, ns)
    rendered_deployment = next(c for c in rendered if c["kind"] == "Deployment")
    container = deployment.spec.template.spec.containers[0]
    want = rendered_deployment["spec"]["template"]["spec"]["containers"][0]
    assert container.image == want["image"] == settings.runtime_image
    limits = {key: str(value) for key, value in want["resources"].get("limits", {}).items()}
    assert container.resources.limits == limits
    if case.autoscaling:  # the HPA owns the replica count: Ferry's apply leaves it out
        assert not ferry_manages_replicas(deployment)
    else:
        assert ferry_manages_replicas(deployment)
        assert deployment.spec.replicas == case.body["spec"].get("replicas", 1)


def test_status_reports_the_generation_and_conditions(kube: Kube, case: ExampleCase) -> None:
    def observed() -> dict[str, Any] | None:
        md = _md(kube, case)
        status = md.get("status") or {}
        if status.get("observedGeneration") != md["metadata"]["generation"]:
            return None
        found = {c["type"] for c in status.get("conditions") or ()}
        return status if set(CONDITIONS) <= found else None

    status = wait_for(observed, timeout=30, what=f"status of {case.name}")
    for item in status["conditions"]:
        assert item["reason"], item
        assert item["status"] in {"True", "False", "Unknown"}
    ns = case.body["metadata"]["namespace"]
    assert status["selector"]
    assert status["url"]["rest"] == f"http://{case.name}.{ns}.svc:{case.http_port}"
    assert status["model"]["name"] == case.served_name


def test_ready_and_serving_through_its_service(
    kube: Kube,
    case: ExampleCase,
    *,
    facts: ClusterFacts,
    store_ready: str,
    models: dict[str, ModelVersion],
    settings: Settings,
) -> None:
    if case.gpu_resource and case.gpu_resource not in facts.extended_resources:
        pytest.skip(f"no node offers {case.gpu_resource}: the pods cannot be scheduled")
    if case.claim and not facts.default_storage_class:
        pytest.skip("the cluster has no default StorageClass to back the example's claim")
    ns = case.body["metadata"]["namespace"]
    md = wait_for(
        lambda: ready_md(kube, ns, case.name),
        timeout=settings.timeout,
        what=f"{case.name} to be Ready",
        details=lambda: kube.describe(ns, case.name),
    )
    assert md["status"]["readyReplicas"] >= case.min_replicas
    service = kube.core.read_namespaced_service(case.name, ns)
    ports = {port.name: port.port for port in service.spec.ports}
    infer_through_service(
        kube,
        ns,
        service=case.name,
        ports=(ports["http"], ports["grpc"]),
        served_name=case.served_name,
        model=models[case.model_version],
    )


def test_deleting_it_collects_every_child(kube: Kube, case: ExampleCase) -> None:
    ns = case.body["metadata"]["namespace"]
    assert live_children(kube, ns, case.name), "nothing to collect"
    kube.delete_md(ns, case.name)
    wait_for(
        lambda: kube.get_md(ns, case.name) is None and no_children_left(kube, ns, case.name),
        timeout=120,
        what=f"the garbage collector to remove every child of {case.name}",
        details=lambda: str(live_children(kube, ns, case.name)),
    )

"""Every example in examples/: applied, reconciled into the children the renderer describes,
reported in status, Ready, serving through its Service, and collected when deleted."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from e2e_examples import EXAMPLES, ExampleCase, adapt, load, store_url
from e2e_kube import ClusterFacts, Kube, Operator, Settings, ready_md, wait_for
from e2e_manifests import credentials_secret, filled_claim, host_path_volume
from e2e_models import ModelVersion
from e2e_reach import Reach
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
    store_base: str,
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
        store_base=store_base,
        archive_path=models["1"].store_path,
        digests={version: model.sha256 for version, model in models.items()},
    )
    if example.credentials_secret:
        kube.apply([credentials_secret(ns, example.credentials_secret)])
    volume: str | None = None
    if example.claim and _claims_work(facts, settings) and facts.can_run_pods():
        claim, path = example.claim
        if not facts.default_storage_class:
            volume = _host_path_volume(kube, settings, f"{ns}-{claim}")
        archive = store_url(store_base, models[example.model_version].store_path)
        kube.apply(filled_claim(ns, claim, path, archive, settings.runtime_image, volume=volume))
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
    if volume is not None:
        kube.kubectl("delete", "pvc", "-n", ns, example.claim[0], "--wait=false", check=False)
        kube.kubectl("delete", "pv", volume, "--wait=false", check=False)


def _claims_work(facts: ClusterFacts, settings: Settings) -> bool:
    """Whether a claim can be bound: a default StorageClass, or hostPath volumes (--hostpath-dir
    on a single-node cluster running on this machine)."""
    return bool(facts.default_storage_class or settings.hostpath_dir)


def _host_path_volume(kube: Kube, settings: Settings, name: str) -> str:
    """PersistentVolume ``name`` on a fresh directory under --hostpath-dir."""
    assert settings.hostpath_dir is not None
    directory = settings.hostpath_dir / name
    directory.mkdir(parents=True, exist_ok=True)
    # The fill Job writes as the runtime image's user, and fsGroup does not apply to hostPath.
    directory.chmod(0o777)
    kube.apply([host_path_volume(name, str(directory))])
    return name


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
    for kind, items in live_children(kube, ns, case.name).items():
        for child in items:
            check_child(child, md, kind)

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
    reach: Reach,
) -> None:
    if case.gpu_resource and case.gpu_resource not in facts.extended_resources:
        pytest.skip(f"no node offers {case.gpu_resource}: the pods cannot be scheduled")
    if case.claim and not _claims_work(facts, settings):
        pytest.skip("no default StorageClass (nor --hostpath-dir) to back the example's claim")
    ns = case.body["metadata"]["namespace"]
    waited = kube.kubectl(
        "-n", ns, "wait", "--for=condition=Ready", f"modeldeployment/{case.name}",
        f"--timeout={int(settings.timeout)}s", check=False, timeout=settings.timeout + 30,
    )  # fmt: skip
    assert waited.returncode == 0, f"kubectl wait: {waited.stderr}\n{kube.describe(ns, case.name)}"
    md = wait_for(
        lambda: ready_md(kube, ns, case.name),
        timeout=30,
        what=f"{case.name} to be Ready for its generation",
        details=lambda: kube.describe(ns, case.name),
    )
    assert md["status"]["readyReplicas"] >= case.min_replicas
    service = kube.core.read_namespaced_service(case.name, ns)
    ports = {port.name: port.port for port in service.spec.ports}
    infer_through_service(
        kube,
        reach,
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

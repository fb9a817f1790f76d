"""Ferry's end-to-end suite: a real cluster, opt-in.

    pytest e2e --kubeconfig ~/.kube/config                     # after `make kind-up`
    pytest e2e --kubeconfig K --operator-local                 # operator as a local process
    pytest e2e --kubeconfig K --allow-context my-test-cluster  # a context not named kind-ferry*

Not part of the default run (pyproject's testpaths is tests/): it runs only when pointed at. It
refuses any kube context whose name does not start with ``kind-ferry`` unless ``--allow-context``
names it. Checks that need running pods skip, with the reason, when the cluster has no
schedulable node, so the rest also runs against a control-plane-only cluster.

Modes:
- default: the Helm chart is installed (release ``ferry`` in ``ferry-system``, as `make kind-up`
  does; an existing release is upgraded and left in place) with the images already loaded into
  the cluster (``--operator-image``, ``--runtime-image``).
- ``--operator-local``: the CRD and the chart's ServiceAccount and RBAC are applied, and
  ``ferry-operator run`` runs here as a subprocess logged in with that ServiceAccount's token —
  so the operator provably needs no more than the chart grants.
- ``--operator-beside``: the chart is installed as in the default mode, but its operator
  Deployment is scaled to zero and its container (the chart's own arguments and environment)
  runs here, logged in with the chart's ServiceAccount token: for clusters whose pods cannot
  reach the API server (the local cluster kit has no kube-proxy).

Reaching pods (``--reach``, see e2e_reach.py): ``port-forward`` (default; kube-proxy and cluster
DNS) or ``endpoints`` (pod IPs from the Services' ready EndpointSlices; only addresses inside
``--endpoint-cidr`` are contacted). ``make test-cluster`` runs
``--operator-beside --reach endpoints --hostpath-dir DIR`` on the local cluster kit.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e_kube import (
    ClusterFacts,
    ContextRefusedError,
    Kube,
    Operator,
    Settings,
    check_context,
    cluster_facts,
    resolve_target,
    wait_for,
)
from e2e_manifests import model_store, namespace
from e2e_models import PT2_FORMATS, ModelVersion, make_version
from e2e_reach import EndpointsReach, PortForwardReach, Reach
from kubernetes import client

ROOT = Path(__file__).resolve().parents[1]
CRD_FILE = ROOT / "crds" / "serving.ferry.dev_modeldeployments.yaml"
RELEASE, RELEASE_NAMESPACE = "ferry", "ferry-system"
LOCAL_RELEASE = "ferry-e2e"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ferry-e2e", "Ferry end-to-end suite")
    group.addoption("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG)")
    group.addoption(
        "--allow-context",
        action="append",
        default=[],
        metavar="NAME",
        help="also allow this kube context (default: only kind-ferry*)",
    )
    group.addoption(
        "--operator-local",
        action="store_true",
        help="run ferry-operator here, with the chart's ServiceAccount token, not the chart",
    )
    group.addoption("--operator-image", default="ferry-operator:dev")
    group.addoption("--runtime-image", default="ferry-runtime:dev")
    group.addoption(
        "--e2e-timeout", type=float, default=300.0, help="seconds to wait for pods to serve"
    )
    group.addoption(
        "--keep-namespace", action="store_true", help="leave the test namespace for debugging"
    )
    group.addoption(
        "--operator-beside",
        action="store_true",
        help="install the chart, but run its operator container here with its ServiceAccount",
    )
    group.addoption(
        "--reach",
        choices=("port-forward", "endpoints"),
        default="port-forward",
        help="reach Services by kubectl port-forward + DNS, or by ready EndpointSlice pod IPs",
    )
    group.addoption(
        "--endpoint-cidr",
        default="10.244.0.0/24",
        help="with --reach endpoints: the only pod network the suite may send traffic to",
    )
    group.addoption(
        "--hostpath-dir",
        type=Path,
        default=None,
        help="single-node cluster on this machine: back pvc:// examples by hostPath volumes here",
    )


MODULE_ORDER = ("test_install", "test_examples", "test_lifecycle")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark everything here e2e, and run installation checks first, the lifecycle last."""
    here = Path(__file__).resolve().parent
    for item in items:
        if here in Path(item.path).resolve().parents:
            item.add_marker(pytest.mark.e2e)
            # Installs, image pulls, model loads and a rollout under load take minutes; the
            # suite's own waits (--e2e-timeout) fail first with a useful message.
            item.add_marker(pytest.mark.timeout(3600))

    def rank(item: pytest.Item) -> int:
        stem = Path(item.path).stem
        return MODULE_ORDER.index(stem) if stem in MODULE_ORDER else len(MODULE_ORDER)

    items.sort(key=rank)  # stable: keeps the order within each module


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    return Settings(
        operator_local=bool(pytestconfig.getoption("--operator-local")),
        operator_image=str(pytestconfig.getoption("--operator-image")),
        runtime_image=str(pytestconfig.getoption("--runtime-image")),
        timeout=float(pytestconfig.getoption("--e2e-timeout")),
        keep_namespace=bool(pytestconfig.getoption("--keep-namespace")),
        operator_beside=bool(pytestconfig.getoption("--operator-beside")),
        reach=str(pytestconfig.getoption("--reach")),
        endpoint_cidr=str(pytestconfig.getoption("--endpoint-cidr")),
        hostpath_dir=pytestconfig.getoption("--hostpath-dir"),
    )


@pytest.fixture(scope="session")
def reach(settings: Settings) -> Reach:
    """How the suite reaches Services and the model store (see e2e_reach)."""
    if settings.reach == "endpoints":
        return EndpointsReach(ipaddress.ip_network(settings.endpoint_cidr), timeout=60)
    return PortForwardReach()


def _tool(name: str) -> str:
    found = shutil.which(name) or (
        str(ROOT / ".venv" / "bin" / name) if (ROOT / ".venv" / "bin" / name).exists() else None
    )
    if found is None:
        pytest.exit(f"e2e needs {name} on PATH", returncode=pytest.ExitCode.USAGE_ERROR)
    return found


@pytest.fixture(scope="session")
def kube(pytestconfig: pytest.Config) -> Kube:
    """Clients for the target cluster, after the context guard."""
    try:
        target = resolve_target(
            pytestconfig.getoption("--kubeconfig"), os.environ.get("KUBECONFIG")
        )
        check_context(target.context, pytestconfig.getoption("--allow-context"))
    except ContextRefusedError as refusal:
        pytest.exit(f"e2e: {refusal}", returncode=pytest.ExitCode.USAGE_ERROR)
    _tool("kubectl")
    kube = Kube(target, helm=_tool("helm"))
    try:
        client.VersionApi(kube.api).get_code(_request_timeout=10)
    except Exception as error:  # any failure to reach the API server ends the run
        pytest.exit(
            f"e2e: cannot reach the API server of context {target.context!r}: {error}",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )
    return kube


@pytest.fixture(scope="session")
def facts(kube: Kube) -> ClusterFacts:
    return cluster_facts(kube)


@pytest.fixture(scope="session")
def pods_run(facts: ClusterFacts) -> None:
    """Use in tests that need running pods."""
    if not facts.can_run_pods():
        pytest.skip("the cluster has no schedulable node, so no pod can run (control-plane only)")


@pytest.fixture(scope="session")
def ns(kube: Kube, settings: Settings) -> Iterator[str]:
    """A fresh namespace enforcing Pod Security "restricted"."""
    name = f"ferry-e2e-{secrets.token_hex(3)}"
    kube.apply([namespace(name)])
    yield name
    if not settings.keep_namespace:
        kube.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="session")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelVersion]:
    """Versions "1" and "2" of the example model (different weights)."""
    workdir = tmp_path_factory.mktemp("models")
    return {version: make_version(workdir, version, seed) for version, seed in (("1", 0), ("2", 1))}


@pytest.fixture(scope="session")
def format_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ModelVersion]:
    """Version "1" of the example model (the same weights) in each PyTorch 2 format."""
    workdir = tmp_path_factory.mktemp("pt2-models")
    return {fmt: make_version(workdir, "1", 0, fmt) for fmt in PT2_FORMATS}


@pytest.fixture(scope="session")
def store(
    kube: Kube,
    ns: str,
    settings: Settings,
    models: dict[str, ModelVersion],
    format_models: dict[str, ModelVersion],
) -> str:
    """The in-cluster model store serving every version and format; returns its namespace."""
    served = [*models.values(), *format_models.values()]
    kube.apply(model_store(ns, settings.runtime_image, served))
    return ns


@pytest.fixture(scope="session")
def store_ready(kube: Kube, store: str, pods_run: None, settings: Settings) -> str:
    wait_for(
        lambda: kube.apps.read_namespaced_deployment("model-store", store).status.ready_replicas,
        timeout=settings.timeout,
        what="the model store to serve",
        details=lambda: kube.kubectl("-n", store, "describe", "pods", check=False).stdout[-3000:],
    )
    return store


@pytest.fixture(scope="session")
def store_base(
    kube: Kube, store: str, reach: Reach, facts: ClusterFacts, settings: Settings
) -> str:
    """Base URL at which model pods fetch from the store: its Service's DNS name, or (endpoints
    mode) its pod IP, once it serves. On a cluster that cannot run pods nothing is ever fetched,
    so the DNS name stands in."""
    if settings.reach == "port-forward" or not facts.can_run_pods():
        return PortForwardReach().store_base(kube, store)
    wait_for(
        lambda: kube.apps.read_namespaced_deployment("model-store", store).status.ready_replicas,
        timeout=settings.timeout,
        what="the model store to serve",
        details=lambda: kube.kubectl("-n", store, "describe", "pods", check=False).stdout[-3000:],
    )
    return reach.store_base(kube, store)


# ---------------------------------------------------------------------------------------------
# The operator under test
# ---------------------------------------------------------------------------------------------


def _other_operators(kube: Kube, allowed: set[tuple[str, str]]) -> list[str]:
    deployments = kube.apps.list_deployment_for_all_namespaces(
        label_selector="app.kubernetes.io/part-of=ferry,app.kubernetes.io/component=operator"
    ).items
    return [
        f"{d.metadata.namespace}/{d.metadata.name}"
        for d in deployments
        if (d.metadata.namespace, d.metadata.name) not in allowed and (d.spec.replicas or 0) > 0
    ]


def _apply_crd(kube: Kube) -> None:
    assert CRD_FILE.is_file(), f"{CRD_FILE} is missing: run `make crd`"
    kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kube.kubectl(
        "wait", "--for=condition=Established", "--timeout=60s",
        "customresourcedefinition/modeldeployments.serving.ferry.dev",
    )  # fmt: skip


@pytest.fixture(scope="session")
def ferry(kube: Kube, ns: str, settings: Settings, facts: ClusterFacts) -> Iterator[Operator]:
    """Ferry installed and running: the chart, or a local process (--operator-local)."""
    if settings.operator_local:
        yield from _local_operator(kube, ns, settings)
    elif settings.operator_beside:
        yield from _beside_operator(kube, settings)
    else:
        yield from _chart_operator(kube, settings, facts)


def _install_chart(kube: Kube, settings: Settings, *helm_args: str) -> bool:
    """The CRD applied and the chart installed (or upgraded) with the suite's images; whether
    the release existed before."""
    _apply_crd(kube)
    existed = kube.helm("status", RELEASE, "-n", RELEASE_NAMESPACE, check=False).returncode == 0
    repository, _, tag = settings.operator_image.rpartition(":")
    kube.helm(
        "upgrade", "--install", RELEASE, str(ROOT / "charts" / "ferry"),
        "--namespace", RELEASE_NAMESPACE, "--create-namespace",
        "--set", f"image.repository={repository}", "--set", f"image.tag={tag}",
        "--set", f"runtime.image={settings.runtime_image}",
        *helm_args,
    )  # fmt: skip
    return existed


def _chart_operator(kube: Kube, settings: Settings, facts: ClusterFacts) -> Iterator[Operator]:
    if not facts.can_run_pods():
        pytest.skip(
            "chart mode runs the operator in a pod and the cluster has no schedulable node; "
            "use --operator-local on a control-plane-only cluster"
        )
    others = _other_operators(kube, {(RELEASE_NAMESPACE, RELEASE)})
    if others:
        pytest.fail(f"another Ferry operator runs in this cluster: {others}; remove it first")
    existed = _install_chart(kube, settings, "--wait", "--timeout", f"{int(settings.timeout)}s")
    started = time.time()

    def logs() -> str:
        since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started - 1))
        return str(kube.kubectl(
            "-n", RELEASE_NAMESPACE, "logs", f"deployment/{RELEASE}", f"--since-time={since}",
            "--all-containers", check=False,
        ).stdout)  # fmt: skip

    operator = Operator("chart", logs, (RELEASE_NAMESPACE, RELEASE), started)
    yield operator
    denials = operator.denials()
    if not existed:
        kube.helm("uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait", check=False)
    assert denials == [], f"the operator was denied by RBAC: {denials[:5]}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _service_account_kubeconfig(kube: Kube, ns: str, account: str, path: Path) -> None:
    """A kubeconfig for the same cluster that authenticates as ``account``'s token."""
    request = client.AuthenticationV1TokenRequest(
        api_version="authentication.k8s.io/v1",
        kind="TokenRequest",
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=7200),
    )
    issued = kube.core.create_namespaced_service_account_token(account, ns, request)
    assert issued.status is not None, "the API server issued no token"
    token = issued.status.token
    flat = json.loads(
        kube.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout
    )
    cluster = flat["clusters"][0]
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [
                    {"name": "operator", "context": {"cluster": cluster["name"], "user": account}}
                ],
                "current-context": "operator",
            }
        )
    )
    path.chmod(0o600)


@contextlib.contextmanager
def _operator_here(
    command: list[str], env: dict[str, str], kubeconfig: Path, log_path: Path, port: int
) -> Iterator[None]:
    """Run ``command`` (ferry-operator run ...) here, logged in with ``kubeconfig``, until the
    block ends; waits for its liveness endpoint on 127.0.0.1:``port`` first."""
    full_env = {**os.environ, **env, "KUBECONFIG": str(kubeconfig), "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=full_env)
    try:

        def alive() -> bool:
            assert process.poll() is None, f"ferry-operator exited:\n{log_path.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(alive, timeout=60, what="the operator's liveness endpoint")
        yield
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def _container_env(container: Any) -> dict[str, str]:
    """Plain ``name: value`` environment of a container; ``valueFrom`` entries cannot be
    resolved outside a pod, so they fail the run with their name."""
    env: dict[str, str] = {}
    for item in container.env or ():
        if item.value_from is not None:
            field = getattr(item.value_from.field_ref, "field_path", None)
            assert field == "metadata.name", f"cannot resolve env {item.name} outside a pod"
            env[item.name] = "ferry-operator-beside"
        else:
            env[item.name] = item.value or ""
    return env


def _beside_operator(kube: Kube, settings: Settings) -> Iterator[Operator]:
    """The chart installed; its operator container run here (see the module docstring)."""
    others = _other_operators(kube, {(RELEASE_NAMESPACE, RELEASE)})
    if others:
        pytest.fail(f"another Ferry operator runs in this cluster: {others}; remove it first")
    existed = _install_chart(kube, settings)
    # Its pod could not reach the API server here: the same container runs beside the cluster.
    kube.kubectl("-n", RELEASE_NAMESPACE, "scale", f"deployment/{RELEASE}", "--replicas=0")
    deployment = kube.apps.read_namespaced_deployment(RELEASE, RELEASE_NAMESPACE)
    pod = deployment.spec.template.spec
    container = next(c for c in pod.containers if c.name == "operator")
    port = _free_port()
    args = list(container.args or ())
    liveness = args.index("--liveness")
    args[liveness + 1] = f"http://127.0.0.1:{port}/healthz"  # loopback, not 0.0.0.0
    binary = Path(sys.executable).with_name("ferry-operator")
    command = [str(binary) if binary.exists() else "ferry-operator", *args]
    env = _container_env(container)
    metrics_url = None
    if "FERRY_METRICS_PORT" in env:  # the chart's metrics endpoint, on loopback here
        metrics_port = _free_port()
        env |= {"FERRY_METRICS_PORT": str(metrics_port), "FERRY_METRICS_ADDRESS": "127.0.0.1"}
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"ferry-e2e-beside-{os.getpid()}"
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "operator.kubeconfig"
    account = pod.service_account_name
    _service_account_kubeconfig(kube, RELEASE_NAMESPACE, account, kubeconfig)
    log_path = workdir / "operator.log"
    operator = Operator(
        "beside", log_path.read_text, (RELEASE_NAMESPACE, account), metrics_url=metrics_url
    )
    try:
        with _operator_here(command, env, kubeconfig, log_path, port):
            yield operator
    finally:
        if not existed:
            kube.helm("uninstall", RELEASE, "-n", RELEASE_NAMESPACE, "--wait", check=False)
    assert operator.denials() == [], f"the operator was denied by RBAC: {operator.denials()[:5]}"


def _local_operator(kube: Kube, ns: str, settings: Settings) -> Iterator[Operator]:
    others = _other_operators(kube, set())
    if others:
        pytest.fail(
            f"a Ferry operator runs in this cluster ({others}) and would reconcile the suite's "
            "objects too: uninstall it (helm uninstall ferry -n ferry-system) for --operator-local"
        )
    _apply_crd(kube)
    # The chart's ServiceAccount and RBAC for a namespaced installation watching `ns`.
    rendered = kube.helm(
        "template", LOCAL_RELEASE, str(ROOT / "charts" / "ferry"), "--namespace", ns,
        "--set", f"watchNamespaces={{{ns}}}",
    ).stdout  # fmt: skip
    rbac_kinds = {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"}
    rbac = [doc for doc in yaml.safe_load_all(rendered) if doc and doc["kind"] in rbac_kinds]
    kube.apply(rbac)
    account = next(doc for doc in rbac if doc["kind"] == "ServiceAccount")["metadata"]["name"]
    workdir = Path(os.environ.get("TMPDIR", "/tmp")) / f"ferry-e2e-{ns}"
    workdir.mkdir(parents=True, exist_ok=True)
    kubeconfig = workdir / "operator.kubeconfig"
    _service_account_kubeconfig(kube, ns, account, kubeconfig)
    port = _free_port()
    binary = Path(sys.executable).with_name("ferry-operator")
    command = [str(binary) if binary.exists() else "ferry-operator", "run", "--standalone"]
    command += ["--namespace", ns, "--liveness", f"http://127.0.0.1:{port}/healthz"]
    metrics_port = _free_port()
    command += ["--metrics-port", str(metrics_port)]
    env = {
        "FERRY_RUNTIME_IMAGE": settings.runtime_image,
        "FERRY_LOG_FORMAT": "plain",
        "FERRY_METRICS_ADDRESS": "127.0.0.1",
    }
    log_path = workdir / "operator.log"
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    operator = Operator("local", log_path.read_text, (ns, account), metrics_url=metrics_url)
    try:
        with _operator_here(command, env, kubeconfig, log_path, port):
            yield operator
    finally:
        for doc in rbac:
            if doc["kind"] in {"ClusterRole", "ClusterRoleBinding"}:
                kube.kubectl(
                    "delete", doc["kind"].lower(), doc["metadata"]["name"], "--ignore-not-found",
                    check=False,
                )  # fmt: skip
    assert operator.denials() == [], f"the operator was denied by RBAC: {operator.denials()[:5]}"

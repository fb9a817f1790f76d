"""Talking to the test cluster: API clients, kubectl/helm with the chosen context, waits,
port-forwards, and the facts the suite adapts to (schedulable nodes, GPUs, storage)."""

from __future__ import annotations

import contextlib
import json
import queue
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

import yaml
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

GROUP = "serving.ferry.dev"
VERSION = "v1alpha1"
PLURAL = "modeldeployments"
MODEL_LABEL = f"{GROUP}/model-deployment"
FIELD_MANAGER = "ferry-operator"
CHILD_KINDS = ("Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget")
RBAC_DENIALS = ("Forbidden", " 403 ", "403 Forbidden", "is forbidden")

T = TypeVar("T")


class ContextRefusedError(Exception):
    """The kubeconfig's context is not a test cluster the suite may touch."""


@dataclass(frozen=True)
class Target:
    """The cluster the suite runs against: a kubeconfig file and one of its contexts."""

    kubeconfig: Path
    context: str


def resolve_target(kubeconfig: str | None, env_kubeconfig: str | None) -> Target:
    """The kubeconfig (option, else $KUBECONFIG's first file, else ~/.kube/config) and its
    current context."""
    if kubeconfig:
        path = Path(kubeconfig).expanduser()
    elif env_kubeconfig:
        path = Path(env_kubeconfig.split(":")[0]).expanduser()
    else:
        path = Path.home() / ".kube" / "config"
    if not path.is_file():
        raise ContextRefusedError(f"no kubeconfig at {path} (give --kubeconfig)")
    document = yaml.safe_load(path.read_text()) or {}
    context = str(document.get("current-context") or "")
    if not context:
        raise ContextRefusedError(f"{path} has no current-context")
    return Target(path, context)


def check_context(context: str, allowed: Sequence[str]) -> None:
    """Refuse any context but a kind-ferry* test cluster or one named with --allow-context."""
    if context.startswith("kind-ferry") or context in allowed:
        return
    raise ContextRefusedError(
        f"refusing kube context {context!r}: the e2e suite creates and deletes objects, so it "
        "only runs against a context named kind-ferry* (make kind-up makes one) or one named "
        "with --allow-context NAME"
    )


class Kube:
    """API clients plus kubectl and helm bound to one kubeconfig context."""

    def __init__(self, target: Target, helm: str) -> None:
        self.target = target
        self.helm_binary = helm
        # The kubernetes client's config module is not annotated.
        self.api = config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(target.kubeconfig), context=target.context
        )
        self.core = client.CoreV1Api(self.api)
        self.apps = client.AppsV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.autoscaling = client.AutoscalingV2Api(self.api)
        self.policy = client.PolicyV1Api(self.api)
        self.rbac = client.RbacAuthorizationV1Api(self.api)
        self.authorization = client.AuthorizationV1Api(self.api)

    # -- command-line tools ---------------------------------------------------------------------

    def kubectl_args(self, *args: str) -> list[str]:
        return [
            "kubectl",
            "--kubeconfig",
            str(self.target.kubeconfig),
            "--context",
            self.target.context,
            *args,
        ]

    def kubectl(
        self, *args: str, stdin: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.kubectl_args(*args),
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed:\n{result.stderr}")
        return result

    def helm(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [
                self.helm_binary,
                "--kubeconfig",
                str(self.target.kubeconfig),
                "--kube-context",
                self.target.context,
                *args,
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed:\n{result.stdout}{result.stderr}")
        return result

    def apply(self, manifests: Sequence[Mapping[str, Any]], manager: str = "ferry-e2e") -> None:
        """Server-side apply of plain manifests (what `kubectl apply --server-side` does)."""
        if manifests:
            text = yaml.safe_dump_all([dict(m) for m in manifests], sort_keys=False)
            self.kubectl(
                "apply", "--server-side", "--force-conflicts", f"--field-manager={manager}",
                "-f", "-", stdin=text,
            )  # fmt: skip

    # -- ModelDeployments -------------------------------------------------------------------------

    def get_md(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            result = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name),
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise
        return result

    def create_md(self, body: Mapping[str, Any]) -> dict[str, Any]:
        namespace = body["metadata"]["namespace"]
        created = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, dict(body)
        )
        return cast(dict[str, Any], created)

    def patch_md(self, namespace: str, name: str, patch: Mapping[str, Any]) -> dict[str, Any]:
        patched = self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, dict(patch)
        )
        return cast(dict[str, Any], patched)

    def get_scale(self, namespace: str, name: str) -> dict[str, Any]:
        """The ModelDeployment's scale subresource (autoscaling/v1 Scale)."""
        scale = self.custom.get_namespaced_custom_object_scale(
            GROUP, VERSION, namespace, PLURAL, name
        )
        return cast(dict[str, Any], scale)

    def delete_md(self, namespace: str, name: str) -> None:
        with contextlib.suppress(ApiException):
            self.custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

    def children(self, namespace: str, name: str) -> dict[str, list[Any]]:
        """Every object of the kinds Ferry creates that carries the model's label."""
        selector = f"{MODEL_LABEL}={name}"
        return {
            "Deployment": self.apps.list_namespaced_deployment(
                namespace, label_selector=selector
            ).items,
            "Service": self.core.list_namespaced_service(namespace, label_selector=selector).items,
            "HorizontalPodAutoscaler": (
                self.autoscaling.list_namespaced_horizontal_pod_autoscaler(
                    namespace, label_selector=selector
                ).items
            ),
            "PodDisruptionBudget": self.policy.list_namespaced_pod_disruption_budget(
                namespace, label_selector=selector
            ).items,
        }

    def pods(self, namespace: str, selector: str) -> list[Any]:
        return list(self.core.list_namespaced_pod(namespace, label_selector=selector).items)

    def describe(self, namespace: str, name: str) -> str:
        """Status, pods and events of a ModelDeployment, for failure messages."""
        md = self.get_md(namespace, name)
        pods = self.kubectl(
            "-n", namespace, "get", "pods", "-l", f"{MODEL_LABEL}={name}", "-o", "wide",
            check=False,
        ).stdout  # fmt: skip
        events = self.kubectl(
            "-n", namespace, "get", "events", "--sort-by=.lastTimestamp", check=False
        ).stdout
        status = json.dumps((md or {}).get("status"), indent=2)
        return f"status: {status}\npods:\n{pods}\nevents:\n{events[-4000:]}"


@dataclass
class Settings:
    """The suite's command-line options."""

    operator_local: bool
    operator_image: str
    runtime_image: str
    timeout: float
    keep_namespace: bool
    operator_beside: bool = False
    """The chart is installed but its operator runs here (with the chart's arguments,
    environment and ServiceAccount token): for clusters whose pods cannot reach the API server."""
    reach: str = "port-forward"
    """``port-forward`` or ``endpoints`` (see e2e_reach)."""
    endpoint_cidr: str = "10.244.0.0/24"
    hostpath_dir: Path | None = None
    """A directory on the (single) node that this process can write: pvc:// examples get a
    hostPath PersistentVolume under it when the cluster has no default StorageClass."""


@dataclass
class Operator:
    """The running operator, the ServiceAccount it acts as, and where its logs are."""

    mode: str
    log_source: Any
    service_account: tuple[str, str]
    """(namespace, name) of the ServiceAccount whose RBAC the operator runs with."""
    started_at: float = field(default_factory=time.time)

    def logs(self) -> str:
        text: str = self.log_source()
        return text

    def denials(self) -> list[str]:
        return [line for line in self.logs().splitlines() if any(d in line for d in RBAC_DENIALS)]


# ---------------------------------------------------------------------------------------------
# Waiting
# ---------------------------------------------------------------------------------------------


def wait_for(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 1.0,
    details: Callable[[], str] | None = None,
) -> T:
    """Call ``probe`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
        except ApiException as error:  # transient API trouble is retried until the deadline
            value, last_error = None, error
        if value:
            return value
        if time.monotonic() >= deadline:
            extra = f"\n{details()}" if details else ""
            cause = f" (last error: {last_error})" if last_error else ""
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{cause}{extra}")
        time.sleep(interval)


def condition(md: Mapping[str, Any] | None, kind: str) -> dict[str, Any] | None:
    for item in ((md or {}).get("status") or {}).get("conditions") or ():
        if item.get("type") == kind:
            return dict(item)
    return None


def ready_md(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """The ModelDeployment when it is Ready for its current generation, else None."""
    md = kube.get_md(namespace, name)
    return md if is_ready(md) else None


def is_ready(md: Mapping[str, Any] | None) -> bool:
    """Ready=True for the current generation (what `kubectl wait --for=condition=Ready` and
    kstatus look at)."""
    if not md:
        return False
    ready = condition(md, "Ready")
    generation = md["metadata"].get("generation")
    observed = (md.get("status") or {}).get("observedGeneration")
    return bool(ready and ready["status"] == "True" and observed == generation)


# ---------------------------------------------------------------------------------------------
# Cluster facts
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClusterFacts:
    """What the cluster can run, so checks that need it skip with a reason instead of hanging."""

    schedulable_nodes: int
    extended_resources: frozenset[str]
    default_storage_class: str | None

    def can_run_pods(self) -> bool:
        return self.schedulable_nodes > 0


def cluster_facts(kube: Kube) -> ClusterFacts:
    schedulable = 0
    resources: set[str] = set()
    for node in kube.core.list_node().items:
        status, spec = node.status or client.V1NodeStatus(), node.spec or client.V1NodeSpec()
        ready = any(c.type == "Ready" and c.status == "True" for c in status.conditions or ())
        blocked = any(t.effect in {"NoSchedule", "NoExecute"} for t in spec.taints or ())
        if ready and not spec.unschedulable and not blocked:
            schedulable += 1
        for resource, quantity in (status.allocatable or {}).items():
            if "/" in resource and str(quantity) not in {"0", ""}:
                resources.add(resource)
    default_class = None
    for storage_class in client.StorageV1Api(kube.api).list_storage_class().items:
        metadata = storage_class.metadata or client.V1ObjectMeta()
        if (metadata.annotations or {}).get("storageclass.kubernetes.io/is-default-class") == (
            "true"
        ):
            default_class = metadata.name
    return ClusterFacts(schedulable, frozenset(resources), default_class)


# ---------------------------------------------------------------------------------------------
# Port-forward
# ---------------------------------------------------------------------------------------------

_FORWARDING = re.compile(r"Forwarding from 127\.0\.0\.1:(\d+)")


@contextlib.contextmanager
def port_forward(kube: Kube, namespace: str, service: str, port: int) -> Iterator[int]:
    """`kubectl port-forward service/NAME :PORT`; yields the local port on 127.0.0.1."""
    process = subprocess.Popen(
        kube.kubectl_args("-n", namespace, "port-forward", f"service/{service}", f":{port}"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def drain() -> None:  # keeps the pipe from filling with "Handling connection" lines
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=drain, daemon=True).start()
    try:
        deadline = time.monotonic() + 30
        seen: list[str] = []
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            seen.append(line)
            match = _FORWARDING.search(line)
            if match:
                local_port = int(match.group(1))
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"port-forward to service/{service} failed: {''.join(seen)}")
        yield local_port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

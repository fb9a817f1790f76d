"""Pure: what the ModelDeployment's status says, from the child Deployment and its pods.

Conditions follow the Kubernetes API conventions: ``type``, ``status``, a CamelCase ``reason``,
a human ``message``, ``lastTransitionTime`` (kept while ``status`` stays the same) and
``observedGeneration``. Three are always present:

* ``Ready``: every desired replica of the current spec runs and passes readiness (the model is
  loaded and warmed up), or the spec asks for zero replicas (``ScaledToZero``).
* ``Progressing``: a rollout of the current spec is under way.
* ``Degraded``: something needs attention (a crash loop, an image that cannot be pulled, a
  model that cannot be fetched, pods that cannot be scheduled, an invalid spec).

For kstatus (Flux, kpt, cli-utils) two "abnormal-true" conditions appear only while true:
``Reconciling`` (with Progressing) and ``Stalled`` (when only a change can help: an invalid spec,
an API refusal, a rollout past its progress deadline). ``status.observedGeneration`` sits at the
top level too, which ``kubectl wait --for=condition=Ready`` and kstatus read.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ferry_operator import constants
from ferry_operator.errors import Blocked
from ferry_operator.render import child_name
from ferry_operator.render.labels import selector_string
from ferry_operator.spec import ModelDeployment

MAX_MESSAGE_LENGTH = 4096
IMAGE_PULL_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName"})
CONFIG_ERROR_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})

# Reasons (one word, CamelCase), so alerts and health checks can match them.
ALL_REPLICAS_READY = "AllReplicasReady"
SCALED_TO_ZERO = "ScaledToZero"
ROLLOUT_IN_PROGRESS = "RolloutInProgress"
MODEL_LOADING = "ModelLoading"
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"
REPLICA_FAILURE = "ReplicaFailure"
CRASH_LOOP_BACK_OFF = "CrashLoopBackOff"
IMAGE_PULL_BACK_OFF = "ImagePullBackOff"
MODEL_LOAD_FAILED = "ModelLoadFailed"
CONTAINER_CONFIG_ERROR = "CreateContainerConfigError"
UNSCHEDULABLE = "Unschedulable"
AS_EXPECTED = "AsExpected"

CONDITION_TYPES = ("Ready", "Progressing", "Degraded")


@dataclass(frozen=True)
class Report:
    """The conditions a rollout imposes while it runs or after it stopped (see
    :mod:`ferry_operator.rollout`)."""

    reason: str
    message: str
    progressing: bool
    degraded: bool
    stalled: bool = False


@dataclass(frozen=True)
class Observation:
    """Everything the status is computed from (gathered by the reconciler)."""

    generation: int
    """``metadata.generation`` of the ModelDeployment acted on."""

    blocked: Blocked | None = None
    """Why the operator did not act on this generation, if it did not."""

    deployment: Mapping[str, Any] | None = None
    """The child Deployment as last seen (``None`` until it exists)."""

    pods: Sequence[Mapping[str, Any]] = ()
    """The model pods (any revision)."""

    expected_replicas: int | None = None
    """``spec.replicas`` when Ferry sets them; ``None`` when an HPA owns the count."""

    min_replicas: int | None = None
    """``spec.autoscaling.minReplicas`` when an HPA owns the count: the Deployment starts at one
    replica until the HPA's first sync raises it, and Ready must not be reported before."""

    selector: str | None = None
    """Label selector of the pods (the scale subresource's ``status.selector``)."""

    url: Mapping[str, str] | None = None
    """In-cluster addresses."""

    model: Mapping[str, Any] | None = None
    """The model the pods are configured to serve."""

    report: Report | None = None
    """What a rollout says; overrides the verdict on :attr:`deployment`."""

    rollout: Mapping[str, Any] | None = None
    """``status.rollout``."""

    revisions: Sequence[Mapping[str, Any]] | None = None
    """``status.revisions``."""

    deployments: Sequence[Mapping[str, Any]] = ()
    """Every model Deployment (their replicas add up in ``status.replicas``); empty: just
    :attr:`deployment`."""

    current_revision: str | None = None
    """The spec's revision (``status.updatedReplicas`` counts its pods)."""


@dataclass(frozen=True)
class Verdict:
    """The three conditions, before bookkeeping (times, generations)."""

    ready: tuple[bool, str, str]
    progressing: tuple[bool, str, str]
    degraded: tuple[bool, str, str]
    stalled: bool = False


def desired_facts(md: ModelDeployment) -> dict[str, Any]:
    """``selector``, ``url`` and ``model`` for a ModelDeployment Ferry can serve."""
    service = child_name(md)
    namespace = md.metadata.namespace
    host = f"{service}.{namespace}.svc"
    model: dict[str, Any] = {
        "name": md.served_name,
        "version": md.spec.model.version,
        "uri": md.spec.model.uri,
    }
    if md.spec.model.sha256:
        model["sha256"] = md.spec.model.sha256
    return {
        "selector": selector_string(md),
        "url": {
            "rest": f"http://{host}:{md.spec.service.http_port}",
            "grpc": f"{host}:{md.spec.service.grpc_port}",
        },
        "model": model,
    }


def compute_status(
    observation: Observation, previous: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """The whole ``status`` to write; equal to ``previous`` when nothing changed."""
    previous = previous or {}
    verdict = assess(observation)
    replicas, ready, updated = _counts(observation)
    status: dict[str, Any] = {
        "observedGeneration": observation.generation,
        "conditions": _conditions(verdict, observation.generation, previous, now),
        "replicas": replicas,
        "readyReplicas": ready,
        "updatedReplicas": updated,
    }
    # A blocked generation leaves the children of the last good one serving: keep describing
    # them rather than inventing addresses for a spec that was never applied.
    for key in ("selector", "url", "model", "rollout", "revisions"):
        value = getattr(observation, key)
        if observation.blocked is not None and value is None:
            value = previous.get(key)
        if value is not None:
            status[key] = value
    return status


def _counts(observation: Observation) -> tuple[int, int, int]:
    """(replicas, ready, updated): pods of every model Deployment; updated are those running
    the spec's revision."""
    deployments = list(observation.deployments) or (
        [observation.deployment] if observation.deployment is not None else []
    )
    replicas = ready = updated = 0
    for deployment in deployments:
        status = deployment.get("status") or {}
        replicas += int(status.get("replicas") or 0)
        ready += int(status.get("readyReplicas") or 0)
        labels = (deployment.get("metadata") or {}).get("labels") or {}
        revision = labels.get(constants.LABEL_REVISION)
        if observation.current_revision is None or revision == observation.current_revision:
            updated += int(status.get("updatedReplicas") or 0)
    return replicas, ready, updated


def status_changed(current: Mapping[str, Any] | None, desired: Mapping[str, Any]) -> bool:
    """Whether writing ``desired`` would change anything."""
    return bool(_normalize(current or {}) != _normalize(desired))


def _normalize(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {key: _normalize(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [_normalize(item) for item in value]
    return value


def _conditions(
    verdict: Verdict, generation: int, previous: Mapping[str, Any], now: str
) -> list[dict[str, Any]]:
    earlier = {
        condition.get("type"): condition
        for condition in previous.get("conditions") or ()
        if isinstance(condition, Mapping)
    }
    wanted: list[tuple[str, tuple[bool, str, str]]] = [
        ("Ready", verdict.ready),
        ("Progressing", verdict.progressing),
        ("Degraded", verdict.degraded),
    ]
    if verdict.progressing[0]:
        wanted.append(("Reconciling", verdict.progressing))
    if verdict.stalled:
        wanted.append(("Stalled", verdict.degraded))
    conditions = []
    for kind, (flag, reason, message) in wanted:
        status = "True" if flag else "False"
        before = earlier.get(kind) or {}
        since = before.get("lastTransitionTime") if before.get("status") == status else None
        conditions.append(
            {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": _clip(message),
                "lastTransitionTime": since or now,
                "observedGeneration": generation,
            }
        )
    return conditions


def _clip(message: str) -> str:
    message = " ".join(message.split())
    if len(message) <= MAX_MESSAGE_LENGTH:
        return message
    return message[: MAX_MESSAGE_LENGTH - 3] + "..."


def assess(observation: Observation) -> Verdict:
    """Decide Ready / Progressing / Degraded for one observation."""
    blocked = observation.blocked
    if blocked is not None:
        return Verdict(
            ready=(False, blocked.reason, blocked.message),
            progressing=(False, blocked.reason, blocked.message),
            degraded=(True, blocked.reason, blocked.message),
            stalled=True,
        )
    report = observation.report
    if report is not None:
        return Verdict(
            ready=(False, report.reason, report.message),
            progressing=(report.progressing, report.reason, report.message),
            degraded=(
                report.degraded,
                report.reason if report.degraded else AS_EXPECTED,
                report.message if report.degraded else "",
            ),
            stalled=report.stalled,
        )
    deployment = observation.deployment
    if deployment is None:
        message = "waiting for the Deployment to be created"
        return _in_progress(ROLLOUT_IN_PROGRESS, message)

    metadata = deployment.get("metadata") or {}
    status = deployment.get("status") or {}
    name = metadata.get("name", "")
    generation = metadata.get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and (observed is None or observed < generation):
        message = f"waiting for the Deployment controller to observe {name!r}"
        return _in_progress(ROLLOUT_IN_PROGRESS, message)

    desired = max(
        _desired_replicas(deployment, observation.expected_replicas),
        observation.min_replicas or 0,
    )
    replicas = int(status.get("replicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    ready = int(status.get("readyReplicas") or 0)
    available = int(status.get("availableReplicas") or 0)
    counts = f"{updated} of {desired} updated, {ready} of {desired} ready"
    conditions = {c.get("type"): c for c in status.get("conditions") or () if isinstance(c, dict)}

    deadline = conditions.get("Progressing") or {}
    if deadline.get("status") == "False" and deadline.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
        problem = pod_problem(observation.pods)
        detail = f"; {problem[0]}: {problem[1]}" if problem else ""
        message = f"rollout of Deployment {name!r} made no progress in time ({counts}){detail}"
        return Verdict(
            ready=(False, PROGRESS_DEADLINE_EXCEEDED, message),
            progressing=(False, PROGRESS_DEADLINE_EXCEEDED, message),
            degraded=(True, PROGRESS_DEADLINE_EXCEEDED, message),
            stalled=True,
        )

    complete = updated >= desired and replicas == updated and available >= desired
    if complete:
        if desired == 0:
            message = "0 replicas requested"
            done = (False, SCALED_TO_ZERO, message)
            return Verdict(
                ready=(True, SCALED_TO_ZERO, message),
                progressing=done,
                degraded=(False, AS_EXPECTED, ""),
            )
        message = f"{ready} of {desired} replicas ready"
        return Verdict(
            ready=(True, ALL_REPLICAS_READY, message),
            progressing=(False, ALL_REPLICAS_READY, message),
            degraded=(False, AS_EXPECTED, ""),
        )

    failure = conditions.get("ReplicaFailure") or {}
    problem = (
        (REPLICA_FAILURE, str(failure.get("message") or failure.get("reason") or ""))
        if failure.get("status") == "True"
        else pod_problem(observation.pods)
    )
    if problem is not None:
        reason, detail = problem
        return Verdict(
            ready=(False, reason, detail),
            progressing=(True, ROLLOUT_IN_PROGRESS, counts),
            degraded=(True, reason, detail),
        )
    loading = _loading_pods(observation.pods)
    if loading:
        return _in_progress(MODEL_LOADING, f"{loading} pod(s) loading the model; {counts}")
    return _in_progress(ROLLOUT_IN_PROGRESS, counts)


def _in_progress(reason: str, message: str) -> Verdict:
    return Verdict(
        ready=(False, reason, message),
        progressing=(True, reason, message),
        degraded=(False, AS_EXPECTED, ""),
    )


def _desired_replicas(deployment: Mapping[str, Any], expected: int | None) -> int:
    spec = deployment.get("spec") or {}
    if "replicas" in spec:
        return int(spec["replicas"])
    return expected if expected is not None else 1  # the Deployment API's default


def live_pods(pods: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [
        pod
        for pod in pods
        if not (pod.get("metadata") or {}).get("deletionTimestamp")
        and (pod.get("status") or {}).get("phase") not in {"Succeeded", "Failed"}
    ]


def pod_problem(pods: Sequence[Mapping[str, Any]]) -> tuple[str, str] | None:
    """The most serious thing keeping pods from becoming ready, with the pod's own words."""
    found: dict[str, str] = {}
    for pod in live_pods(pods):
        status = pod.get("status") or {}
        for container in status.get("initContainerStatuses") or ():
            _init_problem(container, found)
        for container in status.get("containerStatuses") or ():
            _container_problem(container, found)
        for condition in status.get("conditions") or ():
            if (
                condition.get("type") == "PodScheduled"
                and condition.get("status") == "False"
                and condition.get("reason") == UNSCHEDULABLE
            ):
                found.setdefault(UNSCHEDULABLE, str(condition.get("message") or "unschedulable"))
    for reason in (
        IMAGE_PULL_BACK_OFF,
        MODEL_LOAD_FAILED,
        CRASH_LOOP_BACK_OFF,
        CONTAINER_CONFIG_ERROR,
        UNSCHEDULABLE,
    ):
        if reason in found:
            return reason, found[reason]
    return None


def _waiting(container: Mapping[str, Any]) -> Mapping[str, Any]:
    return ((container.get("state") or {}).get("waiting")) or {}


def _image_problem(container: Mapping[str, Any], found: dict[str, str]) -> bool:
    waiting = _waiting(container)
    if waiting.get("reason") in IMAGE_PULL_REASONS:
        detail = waiting.get("message") or waiting.get("reason")
        found.setdefault(
            IMAGE_PULL_BACK_OFF,
            f"container {container.get('name')}: {detail} ({waiting['reason']})",
        )
        return True
    if waiting.get("reason") in CONFIG_ERROR_REASONS:
        detail = waiting.get("message") or waiting.get("reason")
        found.setdefault(CONTAINER_CONFIG_ERROR, f"container {container.get('name')}: {detail}")
        return True
    return False


def _termination(container: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The container's current or last termination with a non-zero exit code, if any."""
    for state_key in ("state", "lastState"):
        terminated = (container.get(state_key) or {}).get("terminated") or {}
        if terminated and terminated.get("exitCode", 0) != 0:
            return terminated
    return None


def _describe_exit(container: Mapping[str, Any], terminated: Mapping[str, Any] | None) -> str:
    name = container.get("name")
    if terminated is None:
        return f"container {name}: restarting after repeated failures"
    message = str(terminated.get("message") or "").strip()
    if message:
        return f"container {name}: {message}"
    reason = terminated.get("reason") or "Error"
    return f"container {name}: exited with code {terminated.get('exitCode')} ({reason})"


def _init_problem(container: Mapping[str, Any], found: dict[str, str]) -> None:
    if _image_problem(container, found):
        return
    terminated = _termination(container)
    if _waiting(container).get("reason") == CRASH_LOOP_BACK_OFF or (
        terminated is not None and not container.get("ready")
    ):
        found.setdefault(MODEL_LOAD_FAILED, _describe_exit(container, terminated))


def _container_problem(container: Mapping[str, Any], found: dict[str, str]) -> None:
    if _image_problem(container, found):
        return
    terminated = _termination(container)
    if (
        terminated is not None
        and terminated.get("exitCode") == constants.RUNTIME_EXIT_MODEL_LOAD_FAILED
        and not container.get("ready")
    ):
        # The runtime could not load the model (wrong format, bad file, device mismatch):
        # its termination message says why and what to do.
        found.setdefault(MODEL_LOAD_FAILED, _describe_exit(container, terminated))
        return
    if _waiting(container).get("reason") == CRASH_LOOP_BACK_OFF:
        found.setdefault(CRASH_LOOP_BACK_OFF, _describe_exit(container, _termination(container)))


def _loading_pods(pods: Sequence[Mapping[str, Any]]) -> int:
    """Pods scheduled onto a node whose server is not ready yet (fetching or loading)."""
    count = 0
    for pod in live_pods(pods):
        status = pod.get("status") or {}
        scheduled = any(
            c.get("type") == "PodScheduled" and c.get("status") == "True"
            for c in status.get("conditions") or ()
        )
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in status.get("conditions") or ()
        )
        if scheduled and not ready:
            count += 1
    return count

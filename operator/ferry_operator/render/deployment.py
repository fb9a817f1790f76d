"""The Deployment that runs the model server pods."""

from __future__ import annotations

import math
from typing import Any

from ferry_operator import constants
from ferry_operator.render.env import server_env
from ferry_operator.render.errors import RenderError
from ferry_operator.render.labels import child_labels, selector_labels
from ferry_operator.render.meta import child_metadata
from ferry_operator.render.model_delivery import model_delivery
from ferry_operator.render.options import RenderOptions
from ferry_operator.render.revision import (
    RevisionDeployment,
    single_layout,
    template_json,
    with_template,
)
from ferry_operator.render.security import container_security_context, pod_security_context
from ferry_operator.spec import ModelDeployment, Resources, Toleration

SERVER_CONTAINER = "model-server"
TMP_VOLUME = "tmp"
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"
METRICS_PATH = "/metrics"
HTTP_PORT_NAME = "http"
GRPC_PORT_NAME = "grpc"
STARTUP_PERIOD_SECONDS = 5

_GPU_TOLERATION: dict[str, Any] = {
    "key": constants.GPU_TAINT_KEY,
    "operator": "Exists",
    "effect": "NoSchedule",
}
_SPREAD_REQUIRED = ("maxSkew", "topologyKey", "whenUnsatisfiable")


def render_deployment(
    md: ModelDeployment, options: RenderOptions, revision: RevisionDeployment | None = None
) -> dict[str, Any]:
    """apps/v1 Deployment running one revision (by default the spec's, under the
    ModelDeployment's own name). ``replicas`` is left out when an HPA owns the count."""
    if revision is None:
        revision = single_layout(md, options).deployments[0]
    served = with_template(md, revision.template)
    labels = {**child_labels(md), constants.LABEL_REVISION: revision.revision}
    selector = dict(selector_labels(md))
    if revision.track is not None:
        selector[constants.LABEL_TRACK] = revision.track
        labels[constants.LABEL_TRACK] = revision.track
    spec: dict[str, Any] = {}
    if revision.replicas is not None:
        spec["replicas"] = revision.replicas
    spec.update(
        {
            "selector": {"matchLabels": selector},
            "strategy": _strategy(md),
            "revisionHistoryLimit": options.revision_history_limit,
            "progressDeadlineSeconds": options.progress_deadline_seconds,
            "template": _pod_template(served, options, labels),
        }
    )
    annotations = {constants.TEMPLATE_ANNOTATION: template_json(revision.template)}
    if revision.rollback_template is not None:
        annotations[constants.ROLLBACK_TEMPLATE_ANNOTATION] = template_json(
            revision.rollback_template
        )
    metadata = child_metadata(md, options, annotations=annotations)
    metadata["name"] = revision.name
    metadata["labels"] = labels
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": spec}


def _is_zero(value: int | str) -> bool:
    return value in (0, "0%")


def _strategy(md: ModelDeployment) -> dict[str, Any]:
    rollout = md.spec.rollout
    if _is_zero(rollout.max_surge) and _is_zero(rollout.max_unavailable):
        raise RenderError(
            "spec.rollout",
            "maxSurge and maxUnavailable cannot both be 0: a rollout could never proceed",
            reason="InvalidRollout",
        )
    return {
        "type": "RollingUpdate",
        "rollingUpdate": {
            "maxSurge": rollout.max_surge,
            "maxUnavailable": rollout.max_unavailable,
        },
    }


def _pod_template(
    md: ModelDeployment, options: RenderOptions, labels: dict[str, str]
) -> dict[str, Any]:
    runtime = md.spec.runtime
    image = runtime.image or options.runtime_image
    resources = server_resources(md.spec.resources)
    tmp_mount = {"name": TMP_VOLUME, "mountPath": "/tmp"}
    delivery = model_delivery(
        md,
        image=image,
        image_pull_policy=runtime.image_pull_policy,
        resources=fetch_resources(md.spec.resources),
        security_context=container_security_context(),
        tmp_mount=tmp_mount,
    )
    http_port = runtime.protocols.http_port
    server: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "image": image,
        "command": ["ferry-runtime", "serve"],
        "env": server_env(md, options),
        "ports": [
            {"name": HTTP_PORT_NAME, "containerPort": http_port, "protocol": "TCP"},
            {
                "name": GRPC_PORT_NAME,
                "containerPort": runtime.protocols.grpc_port,
                "protocol": "TCP",
            },
        ],
        "resources": resources,
        "securityContext": container_security_context(),
        "startupProbe": _http_probe(
            READY_PATH,
            period=STARTUP_PERIOD_SECONDS,
            timeout=2,
            failures=math.ceil(options.startup_timeout_seconds / STARTUP_PERIOD_SECONDS),
        ),
        "readinessProbe": _http_probe(READY_PATH, period=5, timeout=3, failures=3),
        "livenessProbe": _http_probe(LIVE_PATH, period=10, timeout=5, failures=3),
        # The sleep handler (Kubernetes >= 1.30) needs no `sleep` binary in the image.
        "lifecycle": {"preStop": {"sleep": {"seconds": options.pre_stop_delay_seconds}}},
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": sorted(
            [delivery.server_mount, tmp_mount], key=lambda mount: str(mount["mountPath"])
        ),
    }
    if runtime.image_pull_policy is not None:
        server["imagePullPolicy"] = runtime.image_pull_policy

    pod: dict[str, Any] = {
        "automountServiceAccountToken": runtime.automount_service_account_token,
        "enableServiceLinks": False,
        "terminationGracePeriodSeconds": options.termination_grace_period_seconds,
        "securityContext": pod_security_context(options),
        "containers": [server],
        "volumes": sorted(
            [delivery.volume, {"name": TMP_VOLUME, "emptyDir": {}}],
            key=lambda volume: str(volume["name"]),
        ),
    }
    if delivery.fetch_container is not None:
        pod["initContainers"] = [delivery.fetch_container]
    if runtime.service_account_name is not None:
        pod["serviceAccountName"] = runtime.service_account_name
    pod.update(_scheduling(md))
    return {
        "metadata": {
            "labels": labels,
            "annotations": {
                "kubectl.kubernetes.io/default-container": SERVER_CONTAINER,
                "prometheus.io/scrape": "true",
                "prometheus.io/port": str(http_port),
                "prometheus.io/path": METRICS_PATH,
            },
        },
        "spec": pod,
    }


def _http_probe(path: str, *, period: int, timeout: int, failures: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": HTTP_PORT_NAME, "scheme": "HTTP"},
        "periodSeconds": period,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
        "successThreshold": 1,
    }


def _quantities(values: dict[str, int | str]) -> dict[str, str]:
    return {name: str(values[name]) for name in sorted(values)}


def server_resources(resources: Resources) -> dict[str, Any]:
    """Requests and limits of the server; the GPU goes into both, equal, as extended
    resources require."""
    requests = _quantities(resources.requests)
    limits = _quantities(resources.limits)
    if resources.gpu is not None:
        count = str(resources.gpu.count)
        requests[resources.gpu.resource] = count
        limits[resources.gpu.resource] = count
    result: dict[str, Any] = {}
    if limits:
        result["limits"] = dict(sorted(limits.items()))
    if requests:
        result["requests"] = dict(sorted(requests.items()))
    return result


def fetch_resources(resources: Resources) -> dict[str, Any]:
    """The fetcher's requests and limits: the server's without the GPU. Init containers run
    before the server, so the pod's effective request does not grow."""
    result: dict[str, Any] = {}
    if resources.limits:
        result["limits"] = _quantities(resources.limits)
    if resources.requests:
        result["requests"] = _quantities(resources.requests)
    return result


def _tolerates_gpu_taint(toleration: dict[str, Any]) -> bool:
    if toleration.get("effect") not in (None, "NoSchedule"):
        return False
    key = toleration.get("key")
    if toleration.get("operator") == "Exists":
        return key in (None, "", constants.GPU_TAINT_KEY)
    return False


def tolerations(md: ModelDeployment) -> list[dict[str, Any]]:
    """User tolerations (duplicates dropped), plus the GPU taint's when a GPU is asked for."""
    result: list[dict[str, Any]] = []
    for toleration in md.spec.scheduling.tolerations:
        entry = _toleration_dict(toleration)
        if entry not in result:
            result.append(entry)
    if md.spec.resources.gpu is not None and not any(map(_tolerates_gpu_taint, result)):
        result.append(dict(_GPU_TOLERATION))
    return result


def _toleration_dict(toleration: Toleration) -> dict[str, Any]:
    return toleration.model_dump(by_alias=True, exclude_none=True)


def _scheduling(md: ModelDeployment) -> dict[str, Any]:
    scheduling = md.spec.scheduling
    result: dict[str, Any] = {}
    if scheduling.node_selector:
        result["nodeSelector"] = dict(sorted(scheduling.node_selector.items()))
    toleration_list = tolerations(md)
    if toleration_list:
        result["tolerations"] = toleration_list
    if scheduling.affinity:
        result["affinity"] = scheduling.affinity
    if scheduling.priority_class_name is not None:
        result["priorityClassName"] = scheduling.priority_class_name
    if scheduling.topology_spread_constraints:
        result["topologySpreadConstraints"] = [
            _spread(md, index, constraint)
            for index, constraint in enumerate(scheduling.topology_spread_constraints)
        ]
    return result


def _spread(md: ModelDeployment, index: int, constraint: dict[str, Any]) -> dict[str, Any]:
    missing = [key for key in _SPREAD_REQUIRED if key not in constraint]
    if missing:
        raise RenderError(
            f"spec.scheduling.topologySpreadConstraints[{index}]",
            f"missing required field(s): {', '.join(missing)}",
            reason="InvalidScheduling",
        )
    result = dict(constraint)
    result.setdefault("labelSelector", {"matchLabels": selector_labels(md)})
    return result

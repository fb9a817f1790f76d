"""Objects the suite creates around the ModelDeployments: its namespace, an in-cluster model
store, a filled PersistentVolumeClaim, a credentials Secret and the rollout load pod.

Every pod passes Pod Security "restricted": the suite's namespace enforces it, so the model pods
Ferry renders are admitted only if they pass too.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from e2e_models import ModelVersion

UID = 10001  # the runtime image's user
STORE_LABELS = {"app.kubernetes.io/name": "model-store", "app.kubernetes.io/part-of": "ferry-e2e"}


def namespace(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": {
                "app.kubernetes.io/part-of": "ferry-e2e",
                "pod-security.kubernetes.io/enforce": "restricted",
                "pod-security.kubernetes.io/enforce-version": "latest",
            },
        },
    }


def _restricted_pod(containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A pod spec that Pod Security "restricted" admits: non-root, no privilege escalation, no
    capabilities, RuntimeDefault seccomp, read-only root with a writable /tmp."""
    for container in containers:
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        }
        mounts = container.setdefault("volumeMounts", [])
        mounts.append({"name": "tmp", "mountPath": "/tmp"})
    spec["volumes"] = [*spec.get("volumes", []), {"name": "tmp", "emptyDir": {}}]
    return {
        "automountServiceAccountToken": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": UID,
            "runAsGroup": UID,
            "fsGroup": UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": containers,
        **spec,
    }


def model_store(ns: str, image: str, versions: Sequence[ModelVersion]) -> list[dict[str, Any]]:
    """A ConfigMap with the model archives, a static HTTP server (the runtime image's Python)
    serving them at /mlp/v<version>/model.tar.gz, and Service model-store on port 80."""
    files = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "model-store-files", "namespace": ns, "labels": STORE_LABELS},
        "binaryData": {v.archive_key: base64.b64encode(v.archive).decode() for v in versions},
    }
    items = [{"key": v.archive_key, "path": v.store_path} for v in versions]
    server = {
        "name": "http",
        "image": image,
        "command": ["python3", "-m", "http.server", "8000", "--bind", "0.0.0.0"],
        "args": ["--directory", "/srv"],
        "ports": [{"name": "http", "containerPort": 8000}],
        "readinessProbe": {"httpGet": {"path": f"/{versions[0].store_path}", "port": "http"}},
        "volumeMounts": [{"name": "files", "mountPath": "/srv", "readOnly": True}],
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "model-store", "namespace": ns, "labels": STORE_LABELS},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": STORE_LABELS},
            "template": {
                "metadata": {"labels": STORE_LABELS},
                "spec": _restricted_pod(
                    [server],
                    volumes=[
                        {
                            "name": "files",
                            "configMap": {"name": "model-store-files", "items": items},
                        }
                    ],
                ),
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "model-store", "namespace": ns, "labels": STORE_LABELS},
        "spec": {
            "selector": STORE_LABELS,
            "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
        },
    }
    return [files, deployment, service]


def host_path_volume(name: str, directory: str) -> dict[str, Any]:
    """A PersistentVolume on a node directory, for a single-node cluster with no StorageClass
    (Pod Security "restricted" forbids hostPath in pods, not volumes bound through a claim)."""
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": name, "labels": STORE_LABELS},
        "spec": {
            "capacity": {"storage": "64Mi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "hostPath": {"path": directory, "type": "Directory"},
        },
    }


def filled_claim(
    ns: str, claim: str, path: str, archive_url: str, image: str, *, volume: str | None = None
) -> list[dict[str, Any]]:
    """PersistentVolumeClaim ``claim`` (default StorageClass, or bound to PersistentVolume
    ``volume``) and a Job that fetches the model archive into ``path`` on it with the runtime's
    own fetcher."""
    claim_spec: dict[str, Any] = {
        "accessModes": ["ReadWriteOnce"],
        "resources": {"requests": {"storage": "64Mi"}},
    }
    if volume is not None:
        claim_spec |= {"storageClassName": "", "volumeName": volume}
    pvc = {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": claim, "namespace": ns, "labels": STORE_LABELS},
        "spec": claim_spec,
    }
    fetch = {
        "name": "fetch",
        "image": image,
        "args": ["fetch", archive_url, f"/data/{path}"],
        "env": [{"name": "TMPDIR", "value": "/data"}],
        "volumeMounts": [{"name": "data", "mountPath": "/data"}],
    }
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": f"fill-{claim}", "namespace": ns, "labels": STORE_LABELS},
        "spec": {
            "backoffLimit": 3,
            "template": {
                "metadata": {"labels": STORE_LABELS},
                "spec": _restricted_pod(
                    [fetch],
                    restartPolicy="Never",
                    volumes=[{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
                ),
            },
        },
    }
    return [pvc, job]


def credentials_secret(ns: str, name: str) -> dict[str, Any]:
    """The Secret an example names in credentialsSecret. Its keys become the fetcher's
    environment; the model store accepts any Authorization header."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": ns, "labels": STORE_LABELS},
        "type": "Opaque",
        "stringData": {
            "FERRY_RUNTIME_FETCH_AUTHORIZATION": "Bearer ferry-e2e",
            "AWS_ACCESS_KEY_ID": "ferry-e2e",
            "AWS_SECRET_ACCESS_KEY": "ferry-e2e",
            "AWS_REGION": "us-east-1",
        },
    }


def load_pod(ns: str, name: str, image: str, script: str, args: Sequence[str]) -> list[Any]:
    """ConfigMap with e2e/load_client.py and a Pod running it with ``args``."""
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "labels": STORE_LABELS},
        "data": {"load_client.py": script},
    }
    loader = {
        "name": "load",
        "image": image,
        "command": ["python3", "/scripts/load_client.py", *args],
        "volumeMounts": [{"name": "scripts", "mountPath": "/scripts", "readOnly": True}],
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": STORE_LABELS},
        "spec": _restricted_pod(
            [loader],
            restartPolicy="Never",
            volumes=[{"name": "scripts", "configMap": {"name": name}}],
        ),
    }
    return [config_map, pod]

"""The examples in examples/, made runnable in the test cluster.

The examples are written for production clusters: models on S3, on the internet or on a claim
that already holds them, pods sized for real nodes. The suite keeps everything each example says
about how Ferry should serve (replicas, autoscaling, GPUs, scheduling, batching, Service type,
rollout) and changes only what the test cluster cannot provide: every remote model URI points at
the in-cluster model store, a pvc:// claim is created and filled by the suite, a sha256 is the
real model's digest, and CPU/memory requests are small enough for a laptop. The store is
addressed by ``store_base``: its Service's DNS name, or its pod IP where the cluster has no DNS.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from e2e_models import ModelVersion

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("modeldeployment*.yaml"))
DEFAULT_EXAMPLE = ROOT / "examples" / "modeldeployment.yaml"

SMALL_REQUESTS = {"cpu": "100m", "memory": "256Mi"}
MEMORY_LIMIT = "1Gi"  # torch and the example model need a few hundred MiB


@dataclass(frozen=True)
class ExampleCase:
    """One example as the suite applies it."""

    source: Path
    body: dict[str, Any]
    """The ModelDeployment to create."""
    model_version: str
    """Which of the suite's model versions the pods end up serving."""
    claim: tuple[str, str] | None
    """(claim, path) the suite must create and fill, for pvc:// models."""
    credentials_secret: str | None
    """Secret the example names, which the suite creates."""
    gpu_resource: str | None
    """Extended resource the pods need (skip serving checks when the cluster has none)."""

    @property
    def name(self) -> str:
        return str(self.body["metadata"]["name"])

    @property
    def served_name(self) -> str:
        return str(self.body["spec"]["model"].get("name") or self.name)

    @property
    def model_format(self) -> str:
        return str(self.body["spec"]["model"].get("format", "auto"))

    @property
    def autoscaling(self) -> bool:
        return "autoscaling" in self.body["spec"]

    @property
    def min_replicas(self) -> int:
        spec = self.body["spec"]
        if self.autoscaling:
            return int(spec["autoscaling"].get("minReplicas", 1))
        return int(spec.get("replicas", 1))

    @property
    def http_port(self) -> int:
        return int(self.body["spec"].get("service", {}).get("httpPort", 8080))


def store_url(store_base: str, path: str) -> str:
    """URL of a file on the suite's model store (see the ``store_base`` fixture)."""
    return f"{store_base.rstrip('/')}/{path}"


def adapt(
    example: Mapping[str, Any],
    source: Path,
    *,
    namespace: str,
    store_base: str,
    archive_path: str,
    digests: Mapping[str, str],
    default_version: str = "1",
    format_archives: Mapping[str, tuple[str, str]] | None = None,
) -> ExampleCase:
    """The example ``example`` made runnable in ``namespace`` (see the module docstring).

    ``store_base`` is where pods reach the model store, ``archive_path`` the model store path of
    the default version's archive; ``digests`` maps
    each model version the suite has to its model.pt SHA-256. ``format_archives`` maps a
    PyTorch 2 ``spec.model.format`` to (store path, model.pt2 SHA-256) of the default version
    in that format, for examples that name one.
    """
    body = copy.deepcopy(dict(example))
    body["metadata"] = {**body["metadata"], "namespace": namespace}
    spec = body["spec"]
    model = spec["model"]
    scheme = str(model["uri"]).split("://", 1)[0]
    claim: tuple[str, str] | None = None
    version = default_version
    if scheme == "pvc":
        claim_name, _, path = str(model["uri"])[len("pvc://") :].partition("/")
        claim = (claim_name, path)
        version = str(model.get("version", default_version))
        if version not in digests:
            version = default_version
    elif scheme in {"http", "https", "s3"}:
        model["uri"] = store_url(store_base, archive_path)
    else:
        raise ValueError(f"{source.name}: model URI scheme {scheme!r} has no in-cluster stand-in")
    digest = digests[version]
    model_format = str(model.get("format", "auto"))
    if model_format in (format_archives or {}):
        if scheme == "pvc":
            raise ValueError(f"{source.name}: no claim stand-in for format {model_format!r}")
        path, digest = (format_archives or {})[model_format]
        model["uri"] = store_url(store_base, path)
    if "sha256" in model:
        model["sha256"] = digest
    resources = spec.setdefault("resources", {})
    resources["requests"] = {**resources.get("requests", {}), **SMALL_REQUESTS}
    limits = resources.setdefault("limits", {})
    limits["memory"] = MEMORY_LIMIT
    if "cpu" in limits:
        limits["cpu"] = "1"
    gpu = resources.get("gpu")
    gpu_resource = str(gpu.get("resource", "nvidia.com/gpu")) if gpu is not None else None
    return ExampleCase(
        source=source,
        body=body,
        model_version=version,
        claim=claim,
        credentials_secret=model.get("credentialsSecret"),
        gpu_resource=gpu_resource,
    )


def load(source: Path) -> dict[str, Any]:
    document = yaml.safe_load(source.read_text())
    assert isinstance(document, dict), f"{source} holds one ModelDeployment"
    return document


def default_example(
    namespace: str, store_base: str, models: Mapping[str, ModelVersion]
) -> dict[str, Any]:
    """A fresh copy of the default example, serving version "1", made runnable in
    ``namespace`` (the base the lifecycle and rollout tests rename and change)."""
    return adapt(
        load(DEFAULT_EXAMPLE),
        DEFAULT_EXAMPLE,
        namespace=namespace,
        store_base=store_base,
        archive_path=models["1"].store_path,
        digests={version: model.sha256 for version, model in models.items()},
    ).body

"""The ModelDeployment API (serving.ferry.dev/v1alpha1) as pydantic models.

These models are the single source of truth: the CRD's OpenAPI schema (with descriptions taken
from the attribute docstrings below), its CEL rules and its defaults are generated from them by
``ferry_operator.crd``, and the operator parses every object it handles with them. JSON names
are camelCase, as Kubernetes API conventions ask; Python names are snake_case.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel
from pydantic.config import JsonDict
from pydantic_core import PydanticCustomError

from ferry_operator import constants

# ---------------------------------------------------------------------------------------------
# Shared building blocks
# ---------------------------------------------------------------------------------------------

DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
SERVED_NAME = r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$"
SHA256_HEX = r"^[0-9a-f]{64}$"
# A Kubernetes resource quantity ("500m", "2", "1Gi", "1e3").
QUANTITY = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+|[KMGTPE]i?|[mkMGTPE]|[un])?$"
PERCENT = r"^[0-9]+%$"
# Extended resource names: a vendor domain and a resource, e.g. nvidia.com/gpu,
# nvidia.com/mig-1g.10gb, amd.com/gpu.
EXTENDED_RESOURCE = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?/[a-zA-Z0-9]([-a-zA-Z0-9_.]*[a-zA-Z0-9])?$"

SUPPORTED_URI_SCHEMES: tuple[str, ...] = ("pvc", "http", "https", "s3", "file")
# pvc://CLAIM[/PATH] with a valid claim name; CEL (RE2) and Python read it the same way.
PVC_URI = r"^pvc://[a-z0-9]([-a-z0-9.]*[a-z0-9])?(/.*)?$"


def _string_matching(pattern: str) -> AfterValidator:
    """Hold an int-or-string's string values to ``pattern``, as the CRD's schema does."""

    def check(value: int | str) -> int | str:
        if isinstance(value, str) and re.fullmatch(pattern, value) is None:
            raise PydanticCustomError(
                "string_pattern_mismatch",
                "String should match pattern '{pattern}'",
                {"pattern": pattern},
            )
        return value

    return AfterValidator(check)


Quantity = Annotated[
    int | str,
    _string_matching(QUANTITY),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": QUANTITY}),
]
IntOrPercent = Annotated[
    int | str,
    _string_matching(PERCENT),
    Field(json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": PERCENT}),
]


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One ``x-kubernetes-validations`` entry; ``field_path`` points kubectl at the field."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path is not None:
        entry["fieldPath"] = field_path
    return entry


class ApiModel(BaseModel):
    """Base for every API object: camelCase JSON, unknown fields refused, docstrings as docs."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        # No coercion ("3" for 3, true for 1): refuse what the API server's schema refuses.
        strict=True,
        use_attribute_docstrings=True,
    )


# ---------------------------------------------------------------------------------------------
# spec.model
# ---------------------------------------------------------------------------------------------


class ModelSource(ApiModel):
    """Where the model comes from and how to check it."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.uri.matches('^(pvc|https?|s3|file)://.+')",
                    "spec.model.uri must start with pvc://, http://, https://, s3:// or file://",
                    ".uri",
                ),
                cel(
                    f"!self.uri.startsWith('pvc://') || self.uri.matches('{PVC_URI}')",
                    "spec.model.uri: pvc:// URIs are pvc://CLAIM/PATH with a valid claim name",
                    ".uri",
                ),
                cel(
                    "!has(self.credentialsSecret) || self.uri.matches('^(https?|s3)://')",
                    "spec.model.credentialsSecret only applies to http(s):// and s3:// URIs",
                    ".credentialsSecret",
                ),
            ]
        }
    )

    uri: str = Field(min_length=1, max_length=2048)
    """Model location: pvc://CLAIM/PATH (a directory on a PersistentVolumeClaim, mounted
    read-only), http(s)://… (an archive such as model.tar.gz, or a directory URL ending in /),
    s3://BUCKET/PREFIX/ or s3://BUCKET/KEY.tar.gz, or file:///… (local mode only). The model
    directory holds model.pt2 (PyTorch 2) or model.pt (TorchScript), and model.json (tensor
    names, datatypes, shapes; optional beside model.pt2)."""

    format: Literal["auto", "torchscript", "exported-program", "aot-inductor"] = "auto"
    """Model format. auto: detect it from the model directory (model.pt2 or model.pt).
    exported-program: model.pt2 written by torch.export.save, run as its module.
    aot-inductor: model.pt2 written by torch._inductor.aoti_compile_and_package (or
    `ferry-runtime package`), compiled ahead of time for the pod's device (cpu or cuda).
    torchscript: model.pt written by torch.jit.save (deprecated by PyTorch; kept for existing
    models). A format that does not match the files is reported as Ready=False with reason
    ModelLoadFailed."""

    sha256: str | None = Field(default=None, pattern=SHA256_HEX, max_length=64)
    """Expected SHA-256 of the served file (model.pt2, else model.pt) as 64 lowercase hex
    characters. The pod refuses to serve a model whose digest differs."""

    name: str | None = Field(default=None, pattern=SERVED_NAME, max_length=128)
    """Name the model is served under (/v2/models/NAME). Defaults to metadata.name."""

    version: str = Field(default="1", pattern=r"^[a-zA-Z0-9_.-]+$", max_length=64)
    """Version the model is served under (/v2/models/NAME/versions/VERSION)."""

    credentials_secret: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    """Secret in the same namespace whose keys become environment variables of the model
    fetcher: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL for s3://;
    FERRY_RUNTIME_FETCH_AUTHORIZATION (the Authorization header value) for http(s)://."""

    @model_validator(mode="after")
    def _check_uri(self) -> ModelSource:
        scheme = self.uri.split("://", 1)[0] if "://" in self.uri else ""
        if scheme not in SUPPORTED_URI_SCHEMES or not self.uri.split("://", 1)[1]:
            raise ValueError(
                "spec.model.uri must start with pvc://, http://, https://, s3:// or file://"
            )
        if scheme == "pvc" and not re.fullmatch(PVC_URI, self.uri):
            raise ValueError(
                "spec.model.uri: pvc:// URIs are pvc://CLAIM/PATH with a valid claim name"
            )
        if self.credentials_secret is not None and scheme not in {"http", "https", "s3"}:
            raise ValueError(
                "spec.model.credentialsSecret only applies to http(s):// and s3:// URIs"
            )
        return self


# ---------------------------------------------------------------------------------------------
# spec.runtime
# ---------------------------------------------------------------------------------------------


class EnvVar(ApiModel):
    """An environment variable for the model server container."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!(has(self.value) && has(self.valueFrom))",
                    "spec.runtime.env: set value or valueFrom, not both",
                ),
                cel(
                    "!self.name.startsWith('FERRY_RUNTIME_')",
                    "spec.runtime.env: FERRY_RUNTIME_* variables are set by Ferry from the spec",
                    ".name",
                ),
            ]
        }
    )

    name: str = Field(min_length=1, max_length=256, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    """Variable name."""

    value: str | None = Field(default=None, max_length=32768)
    """Literal value."""

    value_from: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """Source for the value (core/v1 EnvVarSource: secretKeyRef, configMapKeyRef, fieldRef,
    resourceFieldRef)."""

    @model_validator(mode="after")
    def _check_value(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("spec.runtime.env: set value or valueFrom, not both")
        if self.name.startswith("FERRY_RUNTIME_"):
            raise ValueError(
                "spec.runtime.env: FERRY_RUNTIME_* variables are set by Ferry from the spec"
            )
        return self


class Protocols(ApiModel):
    """Container ports of the model server."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.httpPort != self.grpcPort",
                    "spec.runtime.protocols: httpPort and grpcPort must differ",
                    ".grpcPort",
                )
            ]
        }
    )

    http_port: int = Field(default=constants.DEFAULT_HTTP_PORT, ge=1024, le=65535)
    """Container port for Open Inference Protocol v2 REST, the simple JSON predict route,
    health probes and /metrics."""

    grpc_port: int = Field(default=constants.DEFAULT_GRPC_PORT, ge=1024, le=65535)
    """Container port for Open Inference Protocol v2 gRPC."""

    @model_validator(mode="after")
    def _check_ports(self) -> Protocols:
        if self.http_port == self.grpc_port:
            raise ValueError("spec.runtime.protocols: httpPort and grpcPort must differ")
        return self


class Runtime(ApiModel):
    """The model server container."""

    image: str | None = Field(default=None, min_length=1, max_length=512)
    """Runtime image. Defaults to the operator's configured runtime image."""

    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    """Image pull policy. Kubernetes' default applies when unset."""

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Device the model runs on: auto (cuda when a GPU is visible), cpu, or cuda."""

    threads: int = Field(default=0, ge=0, le=256)
    """Torch intra-op threads; 0 lets torch decide from the CPUs it sees."""

    frontend_processes: int = Field(default=0, ge=0, le=64)
    """Separate front-end processes serving REST and gRPC on the same ports (SO_REUSEPORT);
    they decode requests and hand tensors to the one process that holds the model and the
    batcher, so the transport's Python work leaves the compute core. Worth it on pods with 2 or
    more CPUs; each process runs its own HTTP and gRPC servers (tens of MiB of memory each).
    0 keeps one process serving both transports and the model."""

    env: list[EnvVar] = Field(default_factory=list, max_length=64)
    """Extra environment variables for the model server container."""

    protocols: Protocols = Field(default_factory=Protocols)
    """Container ports."""

    service_account_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    """ServiceAccount for the model pods. No token is mounted unless
    automountServiceAccountToken is true."""

    automount_service_account_token: bool = False
    """Mount the ServiceAccount token into the model pods (off by default: the runtime needs no
    API access)."""

    @model_validator(mode="after")
    def _check_env_names(self) -> Runtime:
        names = [var.name for var in self.env]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"spec.runtime.env: duplicate names {', '.join(duplicates)}")
        return self


# ---------------------------------------------------------------------------------------------
# spec.autoscaling, spec.resources, spec.scheduling
# ---------------------------------------------------------------------------------------------


class Autoscaling(ApiModel):
    """Horizontal autoscaling. When present, an HPA owns the replica count and spec.replicas
    is ignored."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.minReplicas <= self.maxReplicas",
                    "spec.autoscaling.minReplicas must be less than or equal to maxReplicas",
                    ".minReplicas",
                )
            ]
        }
    )

    min_replicas: int = Field(default=1, ge=1, le=1000)
    """Lower bound for the replica count."""

    max_replicas: int = Field(ge=1, le=1000)
    """Upper bound for the replica count."""

    target_cpu_utilization_percentage: int = Field(default=80, ge=1, le=100)
    """Average CPU utilisation (percent of requests) the HPA aims for. Needs
    resources.requests.cpu."""

    @model_validator(mode="after")
    def _check_bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                "spec.autoscaling.minReplicas must be less than or equal to maxReplicas"
            )
        return self


class Gpu(ApiModel):
    """GPUs for each model pod."""

    count: int = Field(default=1, ge=1, le=16)
    """GPUs per pod (or MIG slices, when resource names a MIG profile)."""

    resource: str = Field(
        default=constants.DEFAULT_GPU_RESOURCE, max_length=253, pattern=EXTENDED_RESOURCE
    )
    """Extended resource name: nvidia.com/gpu, a MIG profile such as nvidia.com/mig-1g.10gb,
    or another vendor's device resource."""


class Resources(ApiModel):
    """Compute resources of the model server container."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.gpu) || !has(self.limits) || !(self.gpu.resource in self.limits)",
                    "spec.resources: set the GPU through resources.gpu, not resources.limits",
                    ".limits",
                )
            ]
        }
    )

    requests: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    """Requested resources, e.g. cpu: "2", memory: 4Gi."""

    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=16)
    """Resource limits, e.g. memory: 8Gi."""

    gpu: Gpu | None = None
    """GPUs per pod. Adds the GPU resource to limits and tolerates the nvidia.com/gpu taint."""

    @model_validator(mode="after")
    def _check_gpu_limits(self) -> Resources:
        if self.gpu is not None and self.gpu.resource in self.limits:
            raise ValueError(
                "spec.resources: set the GPU through resources.gpu, not resources.limits"
            )
        return self


class Toleration(ApiModel):
    """A core/v1 Toleration."""

    key: str | None = Field(default=None, max_length=316)
    """Taint key; empty with operator Exists matches every taint."""

    operator: Literal["Exists", "Equal"] | None = None
    """Exists or Equal (Kubernetes' default: Equal)."""

    value: str | None = Field(default=None, max_length=63)
    """Taint value for operator Equal."""

    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""

    toleration_seconds: int | None = None
    """For NoExecute: how long the pod stays bound after the taint appears."""


class Scheduling(ApiModel):
    """Where model pods may run."""

    node_selector: dict[str, str] = Field(default_factory=dict, max_length=64)
    """Node labels a node must carry."""

    tolerations: list[Toleration] = Field(default_factory=list, max_length=64)
    """Taints the pods tolerate (the GPU taint is added automatically when a GPU is asked for)."""

    affinity: dict[str, Any] | None = Field(
        default=None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """core/v1 Affinity (nodeAffinity, podAffinity, podAntiAffinity)."""

    priority_class_name: str | None = Field(default=None, pattern=DNS_SUBDOMAIN, max_length=253)
    """PriorityClass of the model pods."""

    topology_spread_constraints: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=16,
        json_schema_extra={"items": {"x-kubernetes-preserve-unknown-fields": True}},
    )
    """core/v1 TopologySpreadConstraints; labelSelector defaults to the model pods' labels when
    omitted."""


# ---------------------------------------------------------------------------------------------
# spec.batching, spec.service, spec.rollout
# ---------------------------------------------------------------------------------------------


class Batching(ApiModel):
    """Dynamic batching in the model server: concurrent requests are merged into one forward
    pass."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.preferredBatchSizes.all(s, s <= self.maxBatchSize)",
                    "spec.batching.preferredBatchSizes must each be less than or equal to "
                    "maxBatchSize",
                    ".preferredBatchSizes",
                )
            ]
        }
    )

    enabled: bool = True
    """Merge concurrent requests into batches. When false, every request runs its own forward
    pass."""

    max_batch_size: int = Field(default=32, ge=1, le=4096)
    """Most rows in one forward pass; also the most rows one request may carry."""

    max_queue_delay_ms: int = Field(default=5, ge=0, le=10000)
    """Longest time, in milliseconds, a request waits for its batch to fill."""

    preferred_batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        default_factory=list, max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Batch sizes the batcher prefers to close at (for example sizes the model is fastest at)."""

    max_queue_size: int = Field(default=1024, ge=1, le=1_000_000)
    """Requests that may wait; beyond it requests are refused at once with 503 / UNAVAILABLE."""

    @model_validator(mode="after")
    def _check_preferred(self) -> Batching:
        if len(set(self.preferred_batch_sizes)) != len(self.preferred_batch_sizes):
            raise ValueError("spec.batching.preferredBatchSizes: duplicate sizes")
        if any(size > self.max_batch_size for size in self.preferred_batch_sizes):
            raise ValueError(
                "spec.batching.preferredBatchSizes must each be less than or equal to maxBatchSize"
            )
        return self


class ServiceSpec(ApiModel):
    """The Service in front of the model pods."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.httpPort != self.grpcPort",
                    "spec.service: httpPort and grpcPort must differ",
                    ".grpcPort",
                )
            ]
        }
    )

    type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    """Service type."""

    http_port: int = Field(default=constants.DEFAULT_HTTP_PORT, ge=1, le=65535)
    """Service port for REST."""

    grpc_port: int = Field(default=constants.DEFAULT_GRPC_PORT, ge=1, le=65535)
    """Service port for gRPC."""

    @model_validator(mode="after")
    def _check_ports(self) -> ServiceSpec:
        if self.http_port == self.grpc_port:
            raise ValueError("spec.service: httpPort and grpcPort must differ")
        return self

    annotations: dict[str, str] = Field(default_factory=dict, max_length=64)
    """Annotations for the Service (e.g. for a cloud load balancer)."""


MAX_CANARY_STEPS = 10
_STEP_INDEXES = ", ".join(str(index) for index in range(1, MAX_CANARY_STEPS))


class CanaryStep(ApiModel):
    """One step of a canary rollout: a traffic share held for a while, then analysed."""

    weight: int = Field(ge=1, le=100)
    """Percent of the model's traffic the new revision gets in this step (its share of the
    ready replicas, rounded to whole pods; status.rollout.weight shows the share reached)."""

    pause_seconds: int = Field(default=60, ge=0, le=86400)
    """How long the step lasts once its replicas are ready; the analysis runs during it and
    decides at its end."""


class Analysis(ApiModel):
    """Thresholds a canary must stay within, read from the runtime pods' /metrics."""

    max_error_rate_percent: float = Field(default=1.0, ge=0, le=100)
    """Largest share of failed inference requests (server errors: failed, error, unavailable,
    queue_full) the new revision may answer, in percent."""

    max_p99_latency_ms: int | None = Field(default=None, ge=1, le=600_000)
    """Largest 99th percentile request latency of the new revision, in milliseconds (from the
    runtime's request duration histogram). Unset: latency is not judged."""

    min_requests: int = Field(default=20, ge=0, le=1_000_000)
    """Requests the new revision must answer during a step before the step may pass; fewer
    keep the step waiting (Paused). Error rate and latency are judged once this many arrived."""


class GatewayRef(ApiModel):
    """The Gateway (Gateway API) that routes to the model with exact weights per revision."""

    name: str = Field(min_length=1, max_length=253, pattern=DNS_SUBDOMAIN)
    """Gateway name."""

    namespace: str | None = Field(default=None, max_length=63, pattern=DNS_LABEL)
    """Gateway namespace; defaults to the ModelDeployment's."""

    http_section_name: str | None = Field(default=None, max_length=253, pattern=DNS_LABEL)
    """Listener of the Gateway the HTTPRoute (REST) attaches to; unset: every listener that
    admits it."""

    grpc_section_name: str | None = Field(default=None, max_length=253, pattern=DNS_LABEL)
    """Listener of the Gateway the GRPCRoute attaches to. Gateway API forbids an HTTPRoute and
    a GRPCRoute on the same listener and hostname: name two listeners."""


class Rollout(ApiModel):
    """How a new revision (a changed pod template: model, image, runtime settings) replaces the
    serving one."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "self.strategy != 'Canary' || size(self.steps) > 0",
                    "spec.rollout.steps: a Canary rollout needs at least one step",
                    ".steps",
                ),
                cel(
                    "self.strategy == 'Canary' || size(self.steps) == 0",
                    "spec.rollout.steps only apply to the Canary strategy",
                    ".steps",
                ),
                cel(
                    f"[{_STEP_INDEXES}].all(i, i >= size(self.steps) || "
                    "self.steps[i - 1].weight < self.steps[i].weight)",
                    "spec.rollout.steps: weights must increase from step to step",
                    ".steps",
                ),
            ]
        }
    )

    strategy: Literal["RollingUpdate", "Canary"] = "RollingUpdate"
    """RollingUpdate: the new revision replaces the serving one pod by pod (maxSurge,
    maxUnavailable). Canary: the new revision runs beside the serving one and takes the traffic
    share of each step, judged by the analysis, then is promoted or aborted."""

    max_surge: IntOrPercent = "25%"
    """Extra pods allowed during a rollout (count or percentage)."""

    max_unavailable: IntOrPercent = 0
    """Pods that may be unavailable during a rollout (count or percentage). 0 keeps full
    capacity while new pods load the model."""

    steps: list[CanaryStep] = Field(default_factory=list, max_length=MAX_CANARY_STEPS)
    """Canary steps, with increasing weights. After the last step the new revision is
    promoted to all replicas."""

    analysis: Analysis = Field(default_factory=Analysis)
    """Thresholds checked during every canary step."""

    auto_rollback: bool = True
    """Stop a failing rollout and send all traffic back to the serving revision: a canary that
    breaks its analysis, or a new revision whose pods never become ready. The spec is never
    rewritten: the stopped revision stays aborted until the spec changes again."""

    gateway: GatewayRef | None = None
    """Route through this Gateway with exact weights: Ferry adds a Service per revision and an
    HTTPRoute and a GRPCRoute whose backends are weighted by the canary step. Needs the Gateway
    API (gateway.networking.k8s.io/v1) in the cluster; without it the ModelDeployment is
    refused with reason GatewayAPIUnavailable. Unset: the traffic splits by ready replicas."""

    allow_signature_change: bool = False
    """Let a Canary rollout go ahead when the new model's inputs or outputs (names,
    datatypes, shapes) differ from the serving model's; otherwise it is aborted with reason
    SignatureChanged before its first step."""

    @model_validator(mode="after")
    def _check_steps(self) -> Rollout:
        if self.strategy == "Canary" and not self.steps:
            raise ValueError("spec.rollout.steps: a Canary rollout needs at least one step")
        if self.strategy != "Canary" and self.steps:
            raise ValueError("spec.rollout.steps only apply to the Canary strategy")
        weights = [step.weight for step in self.steps]
        if any(a >= b for a, b in itertools.pairwise(weights)):
            raise ValueError("spec.rollout.steps: weights must increase from step to step")
        return self


# ---------------------------------------------------------------------------------------------
# The object
# ---------------------------------------------------------------------------------------------


class ModelDeploymentSpec(ApiModel):
    """Desired state of a served model."""

    model_config = ConfigDict(
        json_schema_extra={
            "x-kubernetes-validations": [
                cel(
                    "!has(self.runtime) || !has(self.runtime.device) || "
                    "self.runtime.device != 'cuda' || "
                    "(has(self.resources) && has(self.resources.gpu))",
                    "spec.resources.gpu is required when spec.runtime.device is cuda",
                    ".resources",
                ),
            ]
        }
    )

    model: ModelSource
    """The model to serve."""

    runtime: Runtime = Field(default_factory=Runtime)
    """The model server container."""

    replicas: int = Field(default=1, ge=0, le=1000)
    """Desired pods when autoscaling is off (also the scale subresource)."""

    autoscaling: Autoscaling | None = None
    """Horizontal autoscaling; when set, the HPA owns the replica count."""

    resources: Resources = Field(default_factory=Resources)
    """Compute resources and GPUs."""

    scheduling: Scheduling = Field(default_factory=Scheduling)
    """Node selection, tolerations, affinity, priority and topology spread."""

    batching: Batching = Field(default_factory=Batching)
    """Dynamic batching."""

    service: ServiceSpec = Field(default_factory=ServiceSpec)
    """The Service in front of the pods."""

    rollout: Rollout = Field(default_factory=Rollout)
    """Rolling update settings."""

    @model_validator(mode="after")
    def _check_device(self) -> ModelDeploymentSpec:
        if self.runtime.device == "cuda" and self.resources.gpu is None:
            raise ValueError("spec.resources.gpu is required when spec.runtime.device is cuda")
        return self


class Condition(ApiModel):
    """A status condition, following the Kubernetes condition conventions."""

    model_config = ConfigDict(extra="ignore")

    type: str = Field(max_length=316)
    """Ready, Progressing or Degraded."""

    status: Literal["True", "False", "Unknown"]
    """Condition status."""

    reason: str = Field(max_length=1024)
    """CamelCase reason for the last transition."""

    message: str = Field(default="", max_length=32768)
    """Human-readable detail."""

    last_transition_time: str | None = None
    """When the status last changed (RFC 3339)."""

    observed_generation: int | None = None
    """The metadata.generation this condition was computed for."""


class ServingUrls(ApiModel):
    """In-cluster addresses of the model."""

    rest: str | None = None
    """OIP v2 REST base URL."""

    grpc: str | None = None
    """OIP v2 gRPC target (host:port)."""


class ServedModel(ApiModel):
    """The model the pods were configured to serve."""

    name: str
    """Served model name."""

    version: str
    """Served model version."""

    uri: str
    """Model URI."""

    sha256: str | None = None
    """Expected digest, if one was given."""


class RevisionRecord(ApiModel):
    """One revision (a distinct pod template) the ModelDeployment asked for."""

    model_config = ConfigDict(extra="ignore")

    name: str
    """Short hash of the pod template (label serving.ferry.dev/revision on its pods)."""

    model: str
    """Model URI."""

    version: str
    """Served model version."""

    sha256: str | None = None
    """Expected model digest, if one was given."""

    image: str
    """Runtime image."""

    first_served: str | None = None
    """When a pod of this revision first became ready (RFC 3339)."""

    outcome: Literal["Progressing", "Serving", "Superseded", "Aborted"]
    """Progressing (being rolled out), Serving, Superseded (replaced by a newer revision) or
    Aborted (stopped by the rollout; stays so until the spec asks for another revision)."""

    reason: str | None = None
    """Why it was aborted (RolloutAborted, SignatureChanged, ProgressDeadlineExceeded, ...)."""

    message: str | None = None
    """Detail, with the analysis figures for an aborted canary."""


class AnalysisFigures(ApiModel):
    """What the analysis last read from the new revision's pods."""

    model_config = ConfigDict(extra="ignore")

    requests: int
    """Inference requests the new revision answered (since its pods started)."""

    errors: int
    """Of which failed with a server error."""

    error_rate_percent: float
    """errors / requests, in percent."""

    p99_latency_ms: float | None = None
    """99th percentile request latency, in milliseconds."""

    step_requests: int = 0
    """Requests answered during the current step."""


class RolloutStatus(ApiModel):
    """Where the rollout of the spec's revision stands."""

    model_config = ConfigDict(extra="ignore")

    current_revision: str
    """The revision the spec asks for."""

    stable_revision: str | None = None
    """The revision that serves when the rollout stops (the last good one)."""

    phase: Literal["Progressing", "Paused", "Promoting", "Aborted", "Complete"]
    """Progressing (a step is running), Paused (a step waits for requests to judge), Promoting
    (all steps passed; the new revision takes every replica), Aborted, Complete."""

    strategy: str = "RollingUpdate"
    """The strategy in effect."""

    step: int | None = None
    """Current canary step, from 1."""

    steps: int | None = None
    """Number of canary steps."""

    weight: int = 0
    """Share of the ready replicas running the current revision, in percent."""

    step_started_at: str | None = None
    """When the current step's replicas were all ready (its pause counts from here)."""

    step_baseline_requests: int | None = None
    """Requests the new revision had answered when the step started."""

    message: str | None = None
    """What the rollout is doing or why it stopped."""

    analysis: AnalysisFigures | None = None
    """The last analysis figures."""


class ModelDeploymentStatus(ApiModel):
    """Observed state, written only by the operator."""

    model_config = ConfigDict(extra="ignore")

    observed_generation: int | None = None
    """The metadata.generation the operator last acted on."""

    conditions: list[Condition] = Field(default_factory=list)
    """Ready, Progressing and Degraded."""

    replicas: int | None = None
    """Pods that exist (scale subresource)."""

    ready_replicas: int | None = None
    """Pods that passed readiness (model loaded and warmed up)."""

    updated_replicas: int | None = None
    """Pods running the current spec."""

    selector: str | None = None
    """Label selector of the model pods (scale subresource, for the HPA)."""

    url: ServingUrls | None = None
    """In-cluster addresses."""

    model: ServedModel | None = None
    """The model actually configured."""

    revisions: list[RevisionRecord] | None = Field(default=None, max_length=10)
    """The last 10 revisions, newest first, with their outcome."""

    rollout: RolloutStatus | None = None
    """The rollout of the spec's revision."""


class ObjectMeta(BaseModel):
    """The parts of metadata the operator reads."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    name: str
    namespace: str = "default"
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class ModelDeployment(BaseModel):
    """A whole ModelDeployment object as read from the API server or a file."""

    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)

    api_version: Literal["serving.ferry.dev/v1alpha1"] = Field(alias="apiVersion")
    kind: Literal["ModelDeployment"]
    metadata: ObjectMeta
    spec: ModelDeploymentSpec

    @property
    def served_name(self) -> str:
        """The name the model is served under."""
        return self.spec.model.name or self.metadata.name


# ---------------------------------------------------------------------------------------------
# Parsing with errors that name the field
# ---------------------------------------------------------------------------------------------


class SpecError(ValueError):
    """A ModelDeployment that does not match the API; the message names each offending field."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _field_path(loc: tuple[int | str, ...]) -> str:
    """Turn a pydantic error location into a Kubernetes-style field path (spec.a.b[0].c)."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in {"int", "str"} or "[" in part or part.startswith("function-"):
            continue  # union branch markers, not fields
        else:
            path += f".{to_camel(part) if '_' in part else part}" if path else part
    return path


def format_validation_error(error: ValidationError) -> list[str]:
    """One ``field.path: message`` line per problem, deduplicated in order."""
    lines: list[str] = []
    for item in error.errors():
        if item["type"] == "value_error":
            # Cross-field rules already name their field, as the CRD's CEL messages do.
            line = str(item["ctx"]["error"])
        else:
            message = "unknown field" if item["type"] == "extra_forbidden" else item["msg"]
            line = f"{_field_path(item['loc'])}: {message}"
        if line not in lines:
            lines.append(line)
    return lines


def parse_model_deployment(obj: Mapping[str, Any]) -> ModelDeployment:
    """Validate a ModelDeployment object; raise SpecError naming each bad field."""
    try:
        return ModelDeployment.model_validate(dict(obj))
    except ValidationError as error:
        raise SpecError(format_validation_error(error)) from None


def parse_spec(spec: Mapping[str, Any]) -> ModelDeploymentSpec:
    """Validate a bare spec (as Kopf hands it over); raise SpecError naming each bad field."""
    try:
        return ModelDeploymentSpec.model_validate(dict(spec))
    except ValidationError as error:
        lines = format_validation_error(error)
        raise SpecError(
            [line if line.startswith("spec.") else f"spec.{line}" for line in lines]
        ) from None

"""Runtime settings: the ``FERRY_RUNTIME_*`` environment contract (docs/contracts.md).

Loaded once at start-up by ``ferry-runtime serve`` (never at import time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Device = Literal["auto", "cpu", "cuda"]
LogLevel = Literal["critical", "error", "warning", "info", "debug"]


class RuntimeSettings(BaseSettings):
    """Everything the runtime reads from its environment (prefix ``FERRY_RUNTIME_``)."""

    model_config = SettingsConfigDict(
        env_prefix="FERRY_RUNTIME_",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
        protected_namespaces=(),
    )

    model_dir: Path = Path("/models")
    """The model directory: ``model.pt2`` (torch.export program or AOTInductor package) or
    ``model.pt`` (TorchScript), and ``model.json`` (tensor config; optional for ``model.pt2``)."""

    model_name: str = Field(default="model", min_length=1, max_length=256, pattern=r"^[^/\s]+$")
    """The name the model is served under (``/v2/models/{name}``)."""

    model_version: str = Field(default="1", min_length=1, max_length=256, pattern=r"^[^/\s]+$")
    """The served model version (``/v2/models/{name}/versions/{version}``)."""

    model_format: Literal["auto", "torchscript", "exported-program", "aot-inductor"] = "auto"
    """``auto`` (from the files), ``torchscript`` (model.pt), ``exported-program`` or
    ``aot-inductor`` (model.pt2); a format that does not match the files is a load error."""

    model_sha256: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{64}$")
    """Expected SHA-256 of the served file (``model.pt2`` or ``model.pt``); the runtime
    refuses to serve on a mismatch."""

    device: Device = "auto"
    """``auto`` (CUDA when available, else CPU), ``cpu`` or ``cuda`` (an error without CUDA)."""

    threads: int = Field(default=0, ge=0, le=1024)
    """Torch intra-op threads; ``0`` keeps torch's default."""

    host: str = "0.0.0.0"
    """Bind address of both servers."""

    http_port: int = Field(default=8080, ge=0, le=65535)
    """Port of OIP v2 REST, the simple JSON route and ``/metrics`` (0: any free port)."""

    grpc_port: int = Field(default=8081, ge=0, le=65535)
    """Port of OIP v2 gRPC (0: any free port)."""

    batching_enabled: bool = True
    """Dynamic batching on (requests merged into batches) or off (one forward per request)."""

    max_batch_size: int = Field(default=32, ge=1, le=65536)
    """Most rows in one forward pass, and in one request."""

    max_queue_delay_ms: float = Field(default=5.0, ge=0, le=60_000)
    """Longest a queued request waits for its batch to fill (see the batcher's policy)."""

    preferred_batch_sizes: list[int] = Field(default_factory=list, max_length=64)
    """Batch sizes to form when possible, as a JSON list such as ``[8,16]``."""

    max_queue_size: int = Field(default=1024, ge=1, le=1_000_000)
    """Requests waiting for a batch before new ones are refused with 503 / UNAVAILABLE."""

    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024, le=2**31 - 1)
    """Largest request body accepted (413 / RESOURCE_EXHAUSTED above it).

    A model whose inputs all have fixed row shapes gets a lower limit of its own: the body of
    ``max_batch_size`` rows of every input, plus room for the JSON around them."""

    max_json_request_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, le=2**31 - 1)
    """Largest REST body whose tensors travel as JSON numbers (413 above it). JSON tensor data
    takes about five times its size in memory while parsed and holds the interpreter while it
    is; large tensors belong in the binary extension (tritonclient's default)."""

    max_header_bytes: int = Field(default=64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Largest HTTP request line plus headers (431 above it)."""

    max_header_count: int = Field(default=100, ge=8, le=10_000)
    """Most HTTP request headers (431 above it)."""

    header_timeout_s: float = Field(default=10.0, gt=0, le=3600)
    """Longest wait for a request's line and headers, from the connection's start or the end
    of the previous response on it; then the connection is closed (408 when bytes came)."""

    body_timeout_s: float = Field(default=60.0, gt=0, le=3600)
    """Longest wait for a request body once its headers arrived (408, then the connection is
    closed)."""

    serving_thread_nice: int = Field(default=0, ge=0, le=19)
    """Niceness added to the threads that accept, parse and refuse requests (not the model's),
    so under a flood of requests the forward pass gets the CPU first (10: ~0.9 of the saturated
    throughput at 10x overload instead of ~0.6 over gRPC). Off (0) by default: at saturation
    without overload it costs gRPC throughput (docs/reliability.md)."""

    frontend_processes: int = Field(default=0, ge=0, le=64)
    """Processes that serve REST and gRPC and hand requests to this one, which then only runs
    the model and the batcher (``frontends/``). ``0``: the transports share this process (and
    its GIL) with the batcher. With more CPUs than the forward pass uses, ``N`` front ends let
    the request handling use ``N`` more cores."""

    drain_timeout_s: float = Field(default=30.0, ge=0, le=3600)
    """On SIGTERM: longest wait for queued and in-flight requests to finish."""

    log_level: LogLevel = "info"
    """Log level of the runtime and its servers."""

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_log_level(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("model_sha256", mode="before")
    @classmethod
    def _empty_sha_is_none(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.strip().lower()
            return value or None
        return value

    @model_validator(mode="after")
    def _check_batch_sizes(self) -> RuntimeSettings:
        bad = [size for size in self.preferred_batch_sizes if not 1 <= size <= self.max_batch_size]
        if bad:
            raise ValueError(
                f"preferred_batch_sizes {bad} must lie between 1 and max_batch_size "
                f"({self.max_batch_size})"
            )
        if len(set(self.preferred_batch_sizes)) != len(self.preferred_batch_sizes):
            raise ValueError("preferred_batch_sizes must not repeat a size")
        if self.http_port and self.http_port == self.grpc_port:
            raise ValueError(f"http_port and grpc_port are both {self.http_port}")
        return self

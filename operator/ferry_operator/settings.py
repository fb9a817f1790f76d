"""Operator settings: environment variables with the ``FERRY_`` prefix, loaded at start-up.

``ferry-operator run`` builds one :class:`OperatorSettings` before anything else and passes it
down; nothing reads the environment at import time. Command-line flags override the matching
fields (see :meth:`OperatorSettings.with_overrides`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ferry_operator import constants

LogFormat = Literal["plain", "json"]
LogLevel = Literal["debug", "info", "warning", "error"]


class OperatorSettings(BaseSettings):
    """Everything the operator process is configured with (prefix ``FERRY_``)."""

    model_config = SettingsConfigDict(
        env_prefix="FERRY_",
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        use_attribute_docstrings=True,
    )

    watch_namespaces: Annotated[tuple[str, ...], NoDecode] = ()
    """Namespaces to watch, comma-separated (``FERRY_WATCH_NAMESPACES=team-a,team-b``); empty
    watches every namespace. ``--namespace`` flags replace it."""

    runtime_image: str = Field(default=constants.DEFAULT_RUNTIME_IMAGE, min_length=1)
    """Runtime image for ModelDeployments that do not set ``spec.runtime.image``
    (``FERRY_RUNTIME_IMAGE``)."""

    log_format: LogFormat = "plain"
    """``plain`` (human-readable lines) or ``json`` (one JSON object per line)."""

    log_level: LogLevel = "info"
    """Lowest level logged."""

    standalone: bool = False
    """Run without Kopf peering (a single replica). Without it, replicas sharing the peering
    object elect one active operator. ``--standalone`` sets it."""

    require_peering: bool = False
    """Refuse to start when Kopf's peering CRD is missing (``--require-peering``; the Helm chart
    sets it with ``ha.enabled``). Unset, a cluster without the CRD gets a loud warning and a
    standalone operator, Kopf's own convention: fine for one replica, unsafe for two."""

    peering_name: str = Field(default="ferry", min_length=1, max_length=253)
    """Name of the Kopf peering object the replicas share (ClusterKopfPeering when every
    namespace is watched, a KopfPeering in each watched namespace otherwise)."""

    peering_priority: int | None = Field(default=None, ge=0)
    """Peering priority of this replica; the highest live one acts, the others pause. Unset:
    a random priority, so replicas never tie."""

    liveness_endpoint: str | None = None
    """Kopf's liveness endpoint, e.g. ``http://0.0.0.0:8080/healthz``; ``--liveness`` sets it."""

    workers: int = Field(default=32, ge=1, le=1024)
    """ModelDeployments reconciled at the same time (each one is only ever reconciled by one
    worker at a time)."""

    request_timeout_s: float = Field(default=30.0, gt=0)
    """Timeout of one API request the operator makes (watch streams excepted)."""

    retry_base_delay_s: float = Field(default=1.0, gt=0)
    """First delay before a failed reconcile is retried; it doubles on every failure."""

    retry_max_delay_s: float = Field(default=300.0, gt=0)
    """Longest delay between retries of a failed reconcile."""

    @field_validator("watch_namespaces", mode="before")
    @classmethod
    def _split_namespaces(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @model_validator(mode="after")
    def _peering_is_consistent(self) -> OperatorSettings:
        if self.standalone and self.require_peering:
            raise ValueError("standalone and require_peering exclude each other")
        return self

    @property
    def clusterwide(self) -> bool:
        """Whether every namespace is watched."""
        return not self.watch_namespaces

    def with_overrides(
        self,
        *,
        namespaces: list[str] | None = None,
        standalone: bool = False,
        require_peering: bool = False,
        liveness: str | None = None,
    ) -> OperatorSettings:
        """These settings with the command-line flags applied (flags win over the env)."""
        changes: dict[str, Any] = {}
        if namespaces:
            changes["watch_namespaces"] = tuple(namespaces)
        if standalone:
            changes["standalone"] = True
        if require_peering:
            changes["require_peering"] = True
        if liveness is not None:
            changes["liveness_endpoint"] = liveness
        # Validated again: --standalone with FERRY_REQUIRE_PEERING is a contradiction.
        return self.model_validate({**self.model_dump(), **changes}) if changes else self

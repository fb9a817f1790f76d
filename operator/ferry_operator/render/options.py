"""Operator-level knobs of the renderers (everything the spec does not say)."""

from __future__ import annotations

from dataclasses import dataclass

from ferry_operator import constants


@dataclass(frozen=True)
class RenderOptions:
    """What the operator's settings contribute to every rendered child."""

    runtime_image: str = constants.DEFAULT_RUNTIME_IMAGE
    """Runtime image used when ``spec.runtime.image`` is unset."""

    require_owner: bool = True
    """Refuse to render without ``metadata.uid`` (the operator always has one). The preview
    turns this off and renders ownerReferences only when the file carries a uid."""

    run_as_user: int = 10001
    """Non-root UID (and GID, fsGroup) of the model pods; the runtime image owns its files as
    this user."""

    pre_stop_delay_seconds: int = 5
    """preStop sleep: time for endpoints to drop the terminating pod before SIGTERM."""

    drain_timeout_seconds: int = 30
    """``FERRY_RUNTIME_DRAIN_TIMEOUT_S``: longest wait for queued and in-flight work after
    SIGTERM."""

    termination_margin_seconds: int = 5
    """Slack on top of preStop + drain before the kubelet sends SIGKILL."""

    startup_timeout_seconds: int = 600
    """How long the startup probe waits for the model to load and warm up."""

    progress_deadline_seconds: int = 1200
    """Deployment progressDeadlineSeconds; covers the model fetch and the startup probe."""

    revision_history_limit: int = 5
    """Old ReplicaSets kept for rollbacks."""

    @property
    def termination_grace_period_seconds(self) -> int:
        """Grace period that fits the preStop delay, the drain and a margin."""
        return (
            self.pre_stop_delay_seconds
            + self.drain_timeout_seconds
            + self.termination_margin_seconds
        )

"""Security contexts that pass Pod Security "restricted"."""

from __future__ import annotations

from typing import Any

from ferry_operator.render.options import RenderOptions


def pod_security_context(options: RenderOptions) -> dict[str, Any]:
    """Pod-level: non-root with a numeric UID (so the kubelet can verify it), RuntimeDefault
    seccomp, and an fsGroup so emptyDir volumes are writable by the runtime."""
    return {
        "runAsNonRoot": True,
        "runAsUser": options.run_as_user,
        "runAsGroup": options.run_as_user,
        "fsGroup": options.run_as_user,
        "fsGroupChangePolicy": "OnRootMismatch",
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container-level: no privilege, no escalation, no capabilities, read-only root."""
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "privileged": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"},
    }

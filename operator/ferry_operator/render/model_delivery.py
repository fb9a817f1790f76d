"""How the model directory reaches the server container, by URI scheme (docs/contracts.md).

- ``pvc://CLAIM/PATH``: the claim is mounted read-only at /models with ``subPath: PATH``;
  nothing is fetched.
- ``http(s)://`` and ``s3://``: an init container of the runtime image runs
  ``ferry-runtime fetch URI /models [--sha256 DIGEST]`` into an emptyDir that the server
  mounts read-only; credentials come from ``credentialsSecret`` by ``envFrom``.
- ``file://``: local mode only; a hostPath volume would break Pod Security "restricted", so
  rendering fails with :class:`RenderError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ferry_operator import constants
from ferry_operator.render.env import fetch_env
from ferry_operator.render.errors import RenderError
from ferry_operator.spec import ModelDeployment

MODEL_VOLUME = "model"
FETCH_CONTAINER = "fetch-model"
_CLAIM_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@dataclass(frozen=True)
class ModelDelivery:
    """The model volume, the server's mount of it, and the fetch init container if any."""

    volume: dict[str, Any]
    server_mount: dict[str, Any]
    fetch_container: dict[str, Any] | None


@dataclass(frozen=True)
class PvcLocation:
    """A model directory on a PersistentVolumeClaim."""

    claim: str
    path: str
    """Directory inside the claim, relative, without leading or trailing slashes; empty for the
    claim's root."""


def parse_pvc_uri(uri: str) -> PvcLocation:
    """Split ``pvc://CLAIM/PATH``; refuse a bad claim name or a path that climbs out."""
    rest = uri.removeprefix("pvc://")
    claim, _, path = rest.partition("/")
    if len(claim) > 253 or not _CLAIM_NAME.match(claim):
        raise RenderError(
            "spec.model.uri",
            f"{claim!r} is not a valid PersistentVolumeClaim name (pvc://CLAIM/PATH)",
            reason="InvalidModelUri",
        )
    parts = [part for part in path.split("/") if part not in {"", "."}]
    if ".." in parts:
        raise RenderError(
            "spec.model.uri",
            "the path inside the claim may not contain '..'",
            reason="InvalidModelUri",
        )
    return PvcLocation(claim=claim, path="/".join(parts))


def model_delivery(
    md: ModelDeployment,
    *,
    image: str,
    image_pull_policy: str | None,
    resources: dict[str, Any],
    security_context: dict[str, Any],
    tmp_mount: dict[str, Any],
) -> ModelDelivery:
    """Plan the model volume for ``md``; the init container reuses the server's image,
    security context and (GPU-less) resources, so the pod's effective request is unchanged."""
    uri = md.spec.model.uri
    scheme = uri.partition("://")[0]
    if scheme == "pvc":
        return _from_claim(parse_pvc_uri(uri))
    if scheme == "file":
        raise RenderError(
            "spec.model.uri",
            "file:// URIs are for local mode only (ferry-runtime on one machine); a hostPath "
            "volume is not allowed under Pod Security restricted. In a cluster use pvc://, "
            "http(s):// or s3://",
            reason="UnsupportedModelUri",
        )
    if scheme not in {"http", "https", "s3"}:
        raise RenderError(
            "spec.model.uri", f"unsupported scheme {scheme!r}", reason="UnsupportedModelUri"
        )
    command = ["ferry-runtime", "fetch", uri, constants.MODEL_MOUNT_PATH]
    if md.spec.model.sha256 is not None:
        # Verified as soon as it lands: a wrong model fails the init container, not serving.
        command += ["--sha256", md.spec.model.sha256]
    container: dict[str, Any] = {
        "name": FETCH_CONTAINER,
        "image": image,
        "command": command,
        "env": fetch_env(),
        "resources": resources,
        "securityContext": security_context,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": sorted(
            [{"name": MODEL_VOLUME, "mountPath": constants.MODEL_MOUNT_PATH}, tmp_mount],
            key=lambda mount: str(mount["mountPath"]),
        ),
    }
    if image_pull_policy is not None:
        container["imagePullPolicy"] = image_pull_policy
    secret = md.spec.model.credentials_secret
    if secret is not None:
        container["envFrom"] = [{"secretRef": {"name": secret}}]
    return ModelDelivery(
        volume={"name": MODEL_VOLUME, "emptyDir": {}},
        server_mount={
            "name": MODEL_VOLUME,
            "mountPath": constants.MODEL_MOUNT_PATH,
            "readOnly": True,
        },
        fetch_container=container,
    )


def _from_claim(location: PvcLocation) -> ModelDelivery:
    mount: dict[str, Any] = {
        "name": MODEL_VOLUME,
        "mountPath": constants.MODEL_MOUNT_PATH,
        "readOnly": True,
    }
    if location.path:
        mount["subPath"] = location.path
    return ModelDelivery(
        volume={
            "name": MODEL_VOLUME,
            "persistentVolumeClaim": {"claimName": location.claim, "readOnly": True},
        },
        server_mount=mount,
        fetch_container=None,
    )

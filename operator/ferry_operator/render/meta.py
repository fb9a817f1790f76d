"""Object metadata shared by every child: name, namespace, labels, controller owner."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ferry_operator import constants
from ferry_operator.render.errors import RenderError
from ferry_operator.render.labels import child_labels
from ferry_operator.render.names import child_name
from ferry_operator.render.options import RenderOptions
from ferry_operator.spec import ModelDeployment


def owner_reference(md: ModelDeployment, uid: str) -> dict[str, Any]:
    """The controller ownerReference: garbage collection deletes children with their owner."""
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "name": md.metadata.name,
        "uid": uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def child_metadata(
    md: ModelDeployment,
    options: RenderOptions,
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``metadata`` of one child. No Kopf bookkeeping annotations ever land here."""
    metadata: dict[str, Any] = {
        "name": child_name(md),
        "namespace": md.metadata.namespace,
        "labels": child_labels(md),
    }
    if annotations:
        metadata["annotations"] = dict(annotations)
    uid = md.metadata.uid
    if uid:
        metadata["ownerReferences"] = [owner_reference(md, uid)]
    elif options.require_owner:
        raise RenderError(
            "metadata.uid",
            "required to set the children's controller ownerReference",
            reason="MissingUid",
        )
    return metadata

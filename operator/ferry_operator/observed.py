"""The operator's view of the cluster: Kopf's indexes plus its own most recent writes.

Kopf keeps in-memory indexes filled from the watch streams (see ``handlers.py``); this module
decides what goes into them (small snapshots, not whole objects) and how the reconciler reads
them. Reads cost no API request.

A watch event for an object Ferry just wrote can arrive after the next reconcile starts. To
not write the same thing twice, every response to a write is remembered in an
:class:`Overlay` until the watch stream has caught up with it (an event with the same or a
newer ``resourceVersion``, or the object's deletion): "read your writes" for an informer cache.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from ferry_operator import constants

OwnerKey = tuple[str, str]
"""A ModelDeployment by (namespace, name)."""

InstanceKey = tuple[str, str]
"""A ModelDeployment's children and pods by (namespace, ``serving.ferry.dev/model-deployment``
label value): the label is on every child and pod, so one key finds them all."""

ObjectKey = tuple[str, str, str]
"""Any object by (kind, namespace, name)."""

APPLIED_HASH_ANNOTATION = f"{constants.GROUP}/applied-hash"
"""Annotation on every child: digest of the configuration Ferry last applied to it."""

Snapshot = dict[str, Any]
T = TypeVar("T")


def owner_key(body: Mapping[str, Any]) -> OwnerKey | None:
    """The ModelDeployment controlling a child, from its controller ownerReference."""
    metadata = body.get("metadata") or {}
    namespace = metadata.get("namespace")
    for ref in metadata.get("ownerReferences") or ():
        if (
            ref.get("controller")
            and ref.get("kind") == constants.KIND
            and str(ref.get("apiVersion", "")).split("/")[0] == constants.GROUP
            and namespace
        ):
            return (namespace, ref["name"])
    return None


def controller_uid(body: Mapping[str, Any]) -> str | None:
    """UID of the ModelDeployment controlling a child, if one does."""
    for ref in (body.get("metadata") or {}).get("ownerReferences") or ():
        if ref.get("controller") and ref.get("kind") == constants.KIND:
            uid = ref.get("uid")
            return str(uid) if uid else None
    return None


def instance_key(body: Mapping[str, Any]) -> InstanceKey | None:
    """(namespace, value of the ``serving.ferry.dev/model-deployment`` label) of a pod or child."""
    metadata = body.get("metadata") or {}
    value = (metadata.get("labels") or {}).get(constants.LABEL_MODEL_DEPLOYMENT)
    namespace = metadata.get("namespace")
    return (namespace, value) if value and namespace else None


def object_key(body: Mapping[str, Any]) -> ObjectKey:
    """(kind, namespace, name) of any object body."""
    metadata = body.get("metadata") or {}
    return (str(body.get("kind", "")), metadata.get("namespace") or "", metadata.get("name") or "")


def _metadata(body: Mapping[str, Any], *, keep_annotations: Iterable[str] = ()) -> Snapshot:
    metadata = body.get("metadata") or {}
    result: Snapshot = {
        key: metadata[key]
        for key in (
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "labels",
            "ownerReferences",
            "deletionTimestamp",
        )
        if key in metadata
    }
    annotations = metadata.get("annotations") or {}
    kept = {key: annotations[key] for key in keep_annotations if key in annotations}
    if kept:
        result["annotations"] = kept
    return result


def trim_owner(body: Mapping[str, Any]) -> Snapshot:
    """A ModelDeployment as the reconciler needs it (no managedFields)."""
    snapshot: Snapshot = {key: body[key] for key in ("apiVersion", "kind", "spec") if key in body}
    metadata = dict(body.get("metadata") or {})
    metadata.pop("managedFields", None)
    snapshot["metadata"] = metadata
    snapshot["status"] = body.get("status") or {}
    return snapshot


def trim_child(body: Mapping[str, Any]) -> Snapshot:
    """A child as the reconciler needs it: identity, ownership, Ferry's field set, and the
    Deployment's replicas, status and the template it runs."""
    kept: tuple[str, ...] = (APPLIED_HASH_ANNOTATION,)
    if body.get("kind") == "Deployment":
        kept += (constants.TEMPLATE_ANNOTATION, constants.ROLLBACK_TEMPLATE_ANNOTATION)
    snapshot: Snapshot = {
        "apiVersion": body.get("apiVersion"),
        "kind": body.get("kind"),
        "metadata": _metadata(body, keep_annotations=kept),
    }
    managed = [
        entry
        for entry in (body.get("metadata") or {}).get("managedFields") or ()
        if entry.get("manager") == constants.FIELD_MANAGER
    ]
    if managed:
        snapshot["metadata"]["managedFields"] = managed
    if body.get("kind") == "Deployment":
        spec = body.get("spec") or {}
        if "replicas" in spec:
            snapshot["spec"] = {"replicas": spec["replicas"]}
        snapshot["status"] = body.get("status") or {}
    return snapshot


def trim_pod(body: Mapping[str, Any]) -> Snapshot:
    """A pod as status computation and the rollout need it: phase, conditions, container
    states and its IP (canary analysis reads its metrics)."""
    status = body.get("status") or {}
    return {
        "metadata": _metadata(body),
        "status": {
            key: status[key]
            for key in (
                "phase",
                "reason",
                "message",
                "conditions",
                "initContainerStatuses",
                "containerStatuses",
                "podIP",
            )
            if key in status
        },
    }


def resource_version_reached(seen: str | None, written: str | None) -> bool:
    """Whether an event with ``seen`` reflects a write that returned ``written``.

    Resource versions of built-in storage are increasing integers (comparable since
    Kubernetes 1.34, KEP-5504); anything else only compares for equality.
    """
    if seen is None or written is None:
        return True
    try:
        return int(seen) >= int(written)
    except ValueError:
        return seen == written


@dataclass
class _Written:
    owner: InstanceKey | None
    snapshot: Snapshot | None  # None: deleted by us
    resource_version: str | None


class Overlay:
    """Ferry's own writes that the watch streams have not delivered yet."""

    def __init__(self) -> None:
        self._entries: dict[ObjectKey, _Written] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def wrote(self, key: ObjectKey, snapshot: Snapshot, owner: InstanceKey | None) -> None:
        """Remember the object a write returned."""
        version = (snapshot.get("metadata") or {}).get("resourceVersion")
        self._entries[key] = _Written(owner, snapshot, version)

    def deleted(self, key: ObjectKey, owner: InstanceKey | None) -> None:
        """Remember that Ferry deleted an object (until the watch shows it gone)."""
        self._entries[key] = _Written(owner, None, None)

    def observed(self, key: ObjectKey, resource_version: str | None, gone: bool) -> None:
        """A watch event arrived for ``key``: forget the write once the stream has caught up."""
        entry = self._entries.get(key)
        if entry is None:
            return
        if entry.snapshot is None:
            if gone:
                del self._entries[key]
        elif gone or resource_version_reached(resource_version, entry.resource_version):
            del self._entries[key]

    def resolve(self, key: ObjectKey, indexed: Snapshot | None) -> Snapshot | None:
        """The freshest known state of ``key``: our write if the index lags behind it."""
        entry = self._entries.get(key)
        return indexed if entry is None else entry.snapshot

    def written_for(self, owner: InstanceKey) -> list[tuple[ObjectKey, Snapshot | None]]:
        """Pending writes of ``owner``'s children."""
        return [
            (key, entry.snapshot) for key, entry in self._entries.items() if entry.owner == owner
        ]


def _values(index: Mapping[Any, Iterable[T]] | None, key: Any) -> list[T]:
    if index is None:
        return []
    store = index.get(key)
    return list(store) if store is not None else []


class ClusterView:
    """Read access to the indexes Kopf fills, merged with the :class:`Overlay`."""

    def __init__(self) -> None:
        self.overlay = Overlay()
        self._owners: Mapping[Any, Iterable[Snapshot]] | None = None
        self._labels: Mapping[Any, Iterable[str]] | None = None
        self._children: Sequence[Mapping[Any, Iterable[Snapshot]]] = ()
        self._pods: Mapping[Any, Iterable[Snapshot]] | None = None

    def bind(
        self,
        *,
        owners: Mapping[Any, Iterable[Snapshot]],
        owner_labels: Mapping[Any, Iterable[str]],
        children: Sequence[Mapping[Any, Iterable[Snapshot]]],
        pods: Mapping[Any, Iterable[Snapshot]],
    ) -> None:
        """Attach the live indexes (Kopf hands them over at start-up)."""
        self._owners = owners
        self._labels = owner_labels
        self._children = tuple(children)
        self._pods = pods

    def owner(self, key: OwnerKey) -> Snapshot | None:
        """The ModelDeployment ``key``, or ``None`` when it is gone."""
        found = _values(self._owners, key)
        indexed = found[0] if found else None
        return self.overlay.resolve((constants.KIND, *key), indexed)

    def owners(self) -> list[OwnerKey]:
        """Every ModelDeployment currently known."""
        return list(self._owners or ())

    def owner_for_instance(self, instance: InstanceKey) -> OwnerKey | None:
        """The ModelDeployment whose children and pods carry the instance label ``instance``."""
        names = _values(self._labels, instance)
        return (instance[0], names[0]) if names else None

    def children(self, owner: InstanceKey) -> list[Snapshot]:
        """Children carrying ``owner``'s instance label (owned or not: the planner checks)."""
        by_key: dict[ObjectKey, Snapshot | None] = {
            object_key(child): child for index in self._children for child in _values(index, owner)
        }
        for key in list(by_key):
            by_key[key] = self.overlay.resolve(key, by_key[key])
        for key, snapshot in self.overlay.written_for(owner):
            by_key[key] = snapshot
        return [child for child in by_key.values() if child is not None]

    def pods(self, owner: InstanceKey) -> list[Snapshot]:
        """Pods carrying ``owner``'s instance label."""
        return _values(self._pods, owner)

"""Pure: which Kubernetes Events to post about a ModelDeployment, and their bodies.

Events are posted on *transitions* only (the Ready reason changes to a problem, or the object
becomes Ready again after one), computed from the status before and after a reconcile. A
problem that persists therefore yields one Event, not one per reconcile: no event storms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ferry_operator import constants

REPORTING_COMPONENT = f"{constants.GROUP}/{constants.FIELD_MANAGER}"
MAX_EVENT_MESSAGE = 1024


@dataclass(frozen=True)
class Notice:
    """One Event to post about the ModelDeployment."""

    type: Literal["Normal", "Warning"]
    reason: str
    message: str


def _ready(status: Mapping[str, Any] | None) -> Mapping[str, Any]:
    for condition in (status or {}).get("conditions") or ():
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition
    return {}


def _degraded(status: Mapping[str, Any] | None) -> bool:
    return any(
        isinstance(condition, Mapping)
        and condition.get("type") == "Degraded"
        and condition.get("status") == "True"
        for condition in (status or {}).get("conditions") or ()
    )


def notices(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> list[Notice]:
    """Events for the change from status ``before`` to ``after``."""
    old, new = _ready(before), _ready(after)
    if _degraded(after):
        # Once per problem and generation: a new spec with the same problem is news again.
        same_generation = (before or {}).get("observedGeneration") == after.get(
            "observedGeneration"
        )
        if old.get("reason") != new.get("reason") or not same_generation:
            return [Notice("Warning", str(new.get("reason")), str(new.get("message") or ""))]
        return []
    if new.get("status") == "True" and old.get("status") != "True" and _degraded(before):
        return [Notice("Normal", str(new.get("reason")), "recovered: " + str(new.get("message")))]
    return []


def event_body(
    owner: Mapping[str, Any], notice: Notice, *, now: str, instance: str
) -> dict[str, Any]:
    """A core/v1 Event about ``owner`` (shown by ``kubectl describe`` and ``kubectl events``)."""
    metadata = owner.get("metadata") or {}
    namespace = metadata.get("namespace") or "default"
    message = notice.message
    if len(message) > MAX_EVENT_MESSAGE:
        message = message[: MAX_EVENT_MESSAGE - 3] + "..."
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"generateName": f"{metadata.get('name')}.", "namespace": namespace},
        "involvedObject": {
            "apiVersion": constants.API_VERSION,
            "kind": constants.KIND,
            "name": metadata.get("name"),
            "namespace": namespace,
            "uid": metadata.get("uid"),
            "resourceVersion": metadata.get("resourceVersion"),
        },
        "type": notice.type,
        "reason": notice.reason,
        "message": message,
        "action": "Reconcile",
        "source": {"component": constants.FIELD_MANAGER},
        "reportingComponent": REPORTING_COMPONENT,
        "reportingInstance": instance,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }

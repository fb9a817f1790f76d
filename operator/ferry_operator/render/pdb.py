"""The PodDisruptionBudget that keeps voluntary disruptions to one pod at a time."""

from __future__ import annotations

from typing import Any

from ferry_operator.render.labels import selector_labels
from ferry_operator.render.meta import child_metadata
from ferry_operator.render.options import RenderOptions
from ferry_operator.spec import ModelDeployment


def max_possible_replicas(md: ModelDeployment) -> int:
    """The most pods the spec lets run (the HPA's maximum when autoscaling)."""
    autoscaling = md.spec.autoscaling
    return autoscaling.max_replicas if autoscaling is not None else md.spec.replicas


def render_pdb(md: ModelDeployment, options: RenderOptions) -> dict[str, Any] | None:
    """policy/v1 PDB with ``maxUnavailable: 1``, only when more than one replica can run (a
    budget over a single pod would block node drains or protect nothing).

    ``unhealthyPodEvictionPolicy: AlwaysAllow`` lets drains evict pods that never became ready
    (a model that fails to load must not pin a node).
    """
    if max_possible_replicas(md) <= 1:
        return None
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": child_metadata(md, options),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": selector_labels(md)},
            "unhealthyPodEvictionPolicy": "AlwaysAllow",
        },
    }

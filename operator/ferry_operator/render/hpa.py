"""The HorizontalPodAutoscaler that owns the replica count when autoscaling is on."""

from __future__ import annotations

from typing import Any

from ferry_operator.render.meta import child_metadata
from ferry_operator.render.names import child_name
from ferry_operator.render.options import RenderOptions
from ferry_operator.spec import ModelDeployment


def render_hpa(
    md: ModelDeployment, options: RenderOptions, target: str | None = None
) -> dict[str, Any] | None:
    """autoscaling/v2 HPA on the ``target`` Deployment's (by default the ModelDeployment's
    own) CPU utilisation; ``None`` without autoscaling.

    Utilisation is a percentage of the CPU request. When ``resources.requests.cpu`` is unset
    the HPA is still rendered (a namespace LimitRange may supply a default request), and
    :func:`ferry_operator.render.render_warnings` says that it may not be able to scale.
    """
    autoscaling = md.spec.autoscaling
    if autoscaling is None:
        return None
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": child_metadata(md, options),
        "spec": {
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": target or child_name(md),
            },
            "minReplicas": autoscaling.min_replicas,
            "maxReplicas": autoscaling.max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": autoscaling.target_cpu_utilization_percentage,
                        },
                    },
                }
            ],
        },
    }

"""Labels on children and pods, and the selector that finds the model pods."""

from __future__ import annotations

from ferry_operator import constants
from ferry_operator.render.names import label_value
from ferry_operator.spec import ModelDeployment


def selector_labels(md: ModelDeployment) -> dict[str, str]:
    """The stable labels the Deployment, Service, PDB and topology spread select pods by.

    A Deployment's selector is immutable: never add to or change these keys.
    """
    instance = label_value(md.metadata.name)
    return {
        constants.LABEL_NAME: constants.APP_NAME,
        constants.LABEL_INSTANCE: instance,
        constants.LABEL_MODEL_DEPLOYMENT: instance,
    }


def child_labels(md: ModelDeployment) -> dict[str, str]:
    """Labels on every child and on the pod template."""
    return {
        **selector_labels(md),
        constants.LABEL_MANAGED_BY: constants.MANAGED_BY,
        constants.LABEL_COMPONENT: constants.COMPONENT,
    }


def selector_string(md: ModelDeployment) -> str:
    """The selector as ``k=v,k2=v2`` (``status.selector`` for the scale subresource)."""
    return ",".join(f"{key}={value}" for key, value in sorted(selector_labels(md).items()))

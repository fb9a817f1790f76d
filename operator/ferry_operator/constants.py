"""Names shared across the operator: API group, kind, labels, field manager."""

from __future__ import annotations

from typing import Final

GROUP: Final = "serving.ferry.dev"
VERSION: Final = "v1alpha1"
API_VERSION: Final = f"{GROUP}/{VERSION}"
KIND: Final = "ModelDeployment"
PLURAL: Final = "modeldeployments"
SINGULAR: Final = "modeldeployment"
SHORT_NAMES: Final = ("md", "mdep")
CATEGORIES: Final = ("ferry",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"

FIELD_MANAGER: Final = "ferry-operator"
# Holds the Deployment's replicas for a moment when autoscaling is switched on, so that Ferry can
# drop the field from its applied configuration without the API server resetting it to 1
# (server-side apply's documented ownership transfer); the HPA then takes it over.
REPLICAS_HANDOVER_MANAGER: Final = "ferry-operator-replicas-handover"
MANAGED_BY: Final = "ferry"

LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_INSTANCE: Final = "app.kubernetes.io/instance"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
LABEL_MODEL_DEPLOYMENT: Final = f"{GROUP}/model-deployment"
# The revision (short hash of the pod template) a Deployment and its pods run.
LABEL_REVISION: Final = f"{GROUP}/revision"
# Added to the selector of a Deployment made beside another (a canary), so that two Deployments
# of one ModelDeployment never select each other's pods. Constant for the Deployment's life.
LABEL_TRACK: Final = f"{GROUP}/track"
# The template (the spec fields that make the pods) a Deployment runs, so the operator can render
# it again while the spec asks for another revision; and, during a rolling update, the last good
# one to roll back to.
TEMPLATE_ANNOTATION: Final = f"{GROUP}/template"
ROLLBACK_TEMPLATE_ANNOTATION: Final = f"{GROUP}/rollback-template"

APP_NAME: Final = "ferry-model"
COMPONENT: Final = "model-server"

# Kopf's bookkeeping (progress, last-handled state) lives under Ferry's own prefix.
KOPF_ANNOTATIONS_PREFIX: Final = GROUP

DEFAULT_RUNTIME_IMAGE: Final = "ghcr.io/ferry-serving/ferry-runtime:0.1.0"
DEFAULT_GPU_RESOURCE: Final = "nvidia.com/gpu"
GPU_TAINT_KEY: Final = "nvidia.com/gpu"

DEFAULT_HTTP_PORT: Final = 8080
DEFAULT_GRPC_PORT: Final = 8081
MODEL_MOUNT_PATH: Final = "/models"

RUNTIME_EXIT_MODEL_LOAD_FAILED: Final = 3
"""Exit status of ``ferry-runtime serve`` when the model cannot be loaded; its message is the
container's termination message (docs/contracts.md)."""

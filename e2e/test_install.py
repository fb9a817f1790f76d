"""Installation: the CRD is served and enforced, the operator runs, its RBAC is least-privilege."""

from __future__ import annotations

from typing import Any

import pytest
from e2e_kube import GROUP, PLURAL, VERSION, Kube, Operator
from kubernetes import client
from kubernetes.client.exceptions import ApiException


def test_crd_is_established_and_documented(kube: Kube, ferry: Operator) -> None:
    crd = kube.kubectl("get", "crd", f"{PLURAL}.{GROUP}", "-o", "json").stdout
    assert '"type": "Established"' in crd
    explained = kube.kubectl("explain", "modeldeployment.spec.batching").stdout
    assert "maxBatchSize" in explained
    assert "maxQueueDelayMs" in explained


def test_operator_is_running(kube: Kube, ferry: Operator) -> None:
    if ferry.mode in {"chart", "beside"}:
        namespace, name = ferry.service_account
        deployment = kube.apps.read_namespaced_deployment(name, namespace)
        if ferry.mode == "chart":  # beside: the same container runs outside the cluster
            assert (deployment.status.available_replicas or 0) >= 1
        pod_spec = deployment.spec.template.spec
        assert pod_spec.security_context.run_as_non_root is True
        assert pod_spec.containers[0].security_context.read_only_root_filesystem is True
    assert ferry.logs(), "the operator logged nothing"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas"),
        ({"batching": {"maxBatchSize": 8, "preferredBatchSizes": [16]}}, "preferredBatchSizes"),
        ({"replicaCount": 2}, "replicaCount"),
    ],
    ids=["min-above-max", "preferred-above-max", "unknown-field"],
)
def test_api_server_refuses_invalid_specs(
    kube: Kube, ns: str, ferry: Operator, change: dict[str, Any], field: str
) -> None:
    body = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "ModelDeployment",
        "metadata": {"name": "invalid", "namespace": ns},
        "spec": {"model": {"uri": "pvc://models/mlp"}, **change},
    }
    with pytest.raises(ApiException) as refused:
        kube.custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, body, field_validation="Strict"
        )
    # 422 Invalid for schema and CEL rules, 400 BadRequest for a strict-decoding unknown field
    assert refused.value.status in {400, 422}
    assert field in str(refused.value.body)


Access = tuple[str, str, str]
"""(verb, API group, resource[/subresource])"""


def _allowed(kube: Kube, account: tuple[str, str], access: Access, namespace: str) -> bool:
    verb, group, resource = access
    sub, _, subresource = resource.partition("/")
    review = kube.authorization.create_subject_access_review(
        client.V1SubjectAccessReview(
            api_version="authorization.k8s.io/v1",
            kind="SubjectAccessReview",
            spec=client.V1SubjectAccessReviewSpec(
                user=f"system:serviceaccount:{account[0]}:{account[1]}",
                groups=["system:serviceaccounts", f"system:serviceaccounts:{account[0]}"],
                resource_attributes=client.V1ResourceAttributes(
                    verb=verb,
                    group=group,
                    resource=sub,
                    subresource=subresource,
                    namespace=namespace,
                ),
            ),
        )
    )
    assert review.status is not None
    return bool(review.status.allowed)


@pytest.mark.parametrize(
    "access",
    [
        ("watch", GROUP, PLURAL),
        ("patch", GROUP, f"{PLURAL}/status"),
        ("create", "apps", "deployments"),
        ("patch", "apps", "deployments"),
        ("delete", "autoscaling", "horizontalpodautoscalers"),
        ("list", "", "pods"),
        ("create", "", "events"),
    ],
)
def test_operator_account_may_do_what_it_needs(
    kube: Kube, ns: str, ferry: Operator, access: Access
) -> None:
    assert _allowed(kube, ferry.service_account, access, ns)


@pytest.mark.parametrize(
    "access",
    [
        ("get", "", "secrets"),
        ("list", "", "secrets"),
        ("update", GROUP, PLURAL),
        ("patch", GROUP, PLURAL),
        ("delete", GROUP, PLURAL),
        ("create", "", "pods"),
        ("get", "", "configmaps"),
        ("create", "rbac.authorization.k8s.io", "roles"),
    ],
)
def test_operator_account_may_not_do_more(
    kube: Kube, ns: str, ferry: Operator, access: Access
) -> None:
    assert not _allowed(kube, ferry.service_account, access, ns)

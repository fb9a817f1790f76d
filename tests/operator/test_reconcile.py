"""Reconcile decisions (pure) and one reconcile against an in-memory writer."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from ferry_operator import constants
from ferry_operator.errors import ApiError
from ferry_operator.observed import APPLIED_HASH_ANNOTATION, ClusterView, object_key, trim_child
from ferry_operator.reconcile import (
    ChildRef,
    RepairGuard,
    RetryLater,
    manifest_hash,
    plan,
    reconcile,
    with_applied_hash,
)
from ferry_operator.render import RenderOptions, render_children
from ferry_operator.spec import parse_model_deployment

UID = "0b6f3a8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
OPTIONS = RenderOptions(runtime_image="registry.test/ferry-runtime:1")
Fields = Callable[[Any], dict[str, Any]]


def owner(**spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "serving.ferry.dev/v1alpha1",
        "kind": "ModelDeployment",
        "metadata": {"name": "mlp", "namespace": "default", "uid": UID, "generation": 1},
        "spec": {"model": {"uri": "http://store/mlp.tar.gz"}, **spec},
    }
    return body


def stored(manifest: Mapping[str, Any], fields: Fields, **status: Any) -> dict[str, Any]:
    """``manifest`` as the API server stores it after Ferry applied it."""
    body = copy.deepcopy(dict(manifest))
    body["metadata"].update(
        uid=f"uid-{manifest['kind']}",
        resourceVersion="100",
        generation=1,
        managedFields=[
            {"manager": "ferry-operator", "operation": "Apply", "fieldsV1": fields(manifest)},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"},
        ],
    )
    if status:
        body["status"] = status
    return body


def children_of(body: dict[str, Any], fields: Fields) -> list[dict[str, Any]]:
    md = parse_model_deployment(body)
    return [trim_child(stored(with_applied_hash(m), fields)) for m in render_children(md, OPTIONS)]


def test_new_model_deployment_applies_deployment_and_service() -> None:
    decided = plan(owner(), [], OPTIONS)
    assert decided.blocked is None
    assert [(m["kind"], str(w)) for m, w in zip(decided.apply, decided.why, strict=True)] == [
        ("Deployment", "missing"),
        ("Service", "missing"),
    ]
    assert decided.prune == ()
    for manifest in decided.apply:
        annotations = manifest["metadata"]["annotations"]
        unhashed = copy.deepcopy(manifest)
        del unhashed["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        if not unhashed["metadata"]["annotations"]:
            del unhashed["metadata"]["annotations"]
        assert annotations[APPLIED_HASH_ANNOTATION] == manifest_hash(unhashed)
        assert manifest["metadata"]["ownerReferences"][0]["uid"] == UID
        assert not any(key.startswith("kopf.") for key in annotations)


def test_up_to_date_children_need_no_write(owned_fields: Fields) -> None:
    body = owner()
    decided = plan(body, children_of(body, owned_fields), OPTIONS)
    assert (decided.apply, decided.prune, decided.blocked) == ((), (), None)


def test_spec_change_reapplies_the_changed_children(owned_fields: Fields) -> None:
    children = children_of(owner(), owned_fields)
    decided = plan(owner(runtime={"threads": 4}), children, OPTIONS)
    assert [(m["kind"], str(w)) for m, w in zip(decided.apply, decided.why, strict=True)] == [
        ("Deployment", "changed")
    ]


def test_a_field_changed_by_hand_is_drift(owned_fields: Fields) -> None:
    children = children_of(owner(), owned_fields)
    deployment = children[0]
    # `kubectl scale deployment mlp --replicas=5`: replicas now belong to kubectl.
    del deployment["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:replicas"]
    decided = plan(owner(), children, OPTIONS)
    assert [str(why) for why in decided.why] == [
        "drift: changed by another field manager: spec.replicas"
    ]


def test_foreign_additions_are_not_drift(owned_fields: Fields) -> None:
    children = children_of(owner(), owned_fields)
    # `kubectl rollout restart` adds its own annotation under its own manager.
    children[0]["metadata"]["managedFields"].append(
        {
            "manager": "kubectl-rollout",
            "operation": "Update",
            "fieldsV1": {
                "f:spec": {
                    "f:template": {
                        "f:metadata": {"f:annotations": {"f:kubectl.kubernetes.io/restartedAt": {}}}
                    }
                }
            },
        }
    )
    assert plan(owner(), children, OPTIONS).apply == ()


def test_child_not_applied_by_ferry_is_taken_over(owned_fields: Fields) -> None:
    children = children_of(owner(), owned_fields)
    children[1]["metadata"]["managedFields"] = [{"manager": "kubectl", "operation": "Update"}]
    decided = plan(owner(), children, OPTIONS)
    assert [(m["kind"], w.kind) for m, w in zip(decided.apply, decided.why, strict=True)] == [
        ("Service", "drift")
    ]


def test_autoscaling_leaves_replicas_to_the_hpa(owned_fields: Fields) -> None:
    body = owner(
        autoscaling={"minReplicas": 2, "maxReplicas": 5}, resources={"requests": {"cpu": "1"}}
    )
    children = children_of(body, owned_fields)
    deployment = next(c for c in children if c["kind"] == "Deployment")
    # The HPA scales through the scale subresource; Ferry never applied replicas.
    deployment["spec"] = {"replicas": 4}
    assert "f:replicas" not in deployment["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]
    decided = plan(body, children, OPTIONS)
    assert decided.apply == ()
    assert {c["kind"] for c in children} == {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }


def test_children_no_longer_asked_for_are_pruned(owned_fields: Fields) -> None:
    scaled = owner(autoscaling={"minReplicas": 2, "maxReplicas": 5})
    children = children_of(scaled, owned_fields)
    decided = plan(owner(), children, OPTIONS)  # autoscaling off, one replica: no HPA, no PDB
    assert decided.prune == (
        ChildRef(
            "autoscaling/v2",
            "HorizontalPodAutoscaler",
            "default",
            "mlp",
            "uid-HorizontalPodAutoscaler",
        ),
        ChildRef("policy/v1", "PodDisruptionBudget", "default", "mlp", "uid-PodDisruptionBudget"),
    )
    assert [m["kind"] for m in decided.apply] == ["Deployment"]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: c["metadata"]["ownerReferences"][0].update(uid="someone-else"),
        lambda c: c["metadata"].update(ownerReferences=[]),
        lambda c: c["metadata"]["labels"].update({"app.kubernetes.io/managed-by": "helm"}),
        lambda c: c["metadata"].update(deletionTimestamp="2026-05-01T10:00:00Z"),
    ],
    ids=["other-owner", "no-owner", "not-managed-by-ferry", "already-deleting"],
)
def test_prune_only_touches_what_this_object_controls(
    owned_fields: Fields, tamper: Callable[[dict[str, Any]], None]
) -> None:
    children = children_of(owner(autoscaling={"minReplicas": 1, "maxReplicas": 1}), owned_fields)
    hpa = next(c for c in children if c["kind"] == "HorizontalPodAutoscaler")
    tamper(hpa)
    assert plan(owner(), children, OPTIONS).prune == ()


def test_invalid_spec_blocks_without_touching_children(owned_fields: Fields) -> None:
    children = children_of(owner(), owned_fields)
    decided = plan(owner(replicas="many"), children, OPTIONS)
    assert decided.blocked is not None
    assert decided.blocked.reason == "InvalidSpec"
    assert "spec.replicas" in decided.blocked.message
    assert (decided.apply, decided.prune) == ((), ())
    assert decided.deployment is not None  # the old children still describe the serving state


def test_render_error_blocks_with_its_reason() -> None:
    decided = plan(owner(rollout={"maxSurge": 0, "maxUnavailable": 0}), [], OPTIONS)
    assert decided.blocked is not None
    assert decided.blocked.reason == "InvalidRollout"
    assert "spec.rollout" in decided.blocked.message


def test_hash_ignores_key_order() -> None:
    assert manifest_hash({"a": 1, "b": {"c": 2, "d": 3}}) == manifest_hash(
        {"b": {"d": 3, "c": 2}, "a": 1}
    )
    assert manifest_hash({"a": 1}) != manifest_hash({"a": 2})


def test_repair_guard_allows_one_repair_per_cooldown() -> None:
    now = [100.0]
    guard = RepairGuard(cooldown_s=10.0, clock=lambda: now[0])
    key = ("Deployment", "default", "mlp")
    assert guard.admit(key) == 0.0
    now[0] = 104.0
    assert guard.admit(key) == pytest.approx(6.0)
    assert guard.admit(("Service", "default", "mlp")) == 0.0
    now[0] = 110.0
    assert guard.admit(key) == 0.0


# ---------------------------------------------------------------------------------------------
# One reconcile, with an in-memory cluster
# ---------------------------------------------------------------------------------------------


class FakeCluster:
    """The Writer protocol over dicts, standing in for the API server."""

    def __init__(self, fields: Fields) -> None:
        self.fields = fields
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.calls: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.fail_apply: ApiError | None = None
        self.fail_status: ApiError | None = None

    async def apply(
        self, manifest: Mapping[str, Any], field_manager: str = constants.FIELD_MANAGER
    ) -> dict[str, Any]:
        if field_manager != constants.FIELD_MANAGER:
            self.calls.append(f"apply {manifest['kind']} as {field_manager}")
            return dict(manifest)
        self.calls.append(f"apply {manifest['kind']}")
        if self.fail_apply is not None:
            raise self.fail_apply
        body = stored(manifest, self.fields)
        self.objects[object_key(body)] = body
        return body

    async def delete(self, child: ChildRef) -> None:
        self.calls.append(f"delete {child.kind}")
        self.objects.pop((child.kind, child.namespace, child.name), None)

    async def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any]
    ) -> dict[str, Any]:
        self.calls.append("status")
        if self.fail_status is not None:
            raise self.fail_status
        md = self.objects[(constants.KIND, namespace, name)]
        md["status"] = {
            k: v for k, v in {**md.get("status", {}), **status}.items() if v is not None
        }
        md["metadata"]["resourceVersion"] = str(int(md["metadata"]["resourceVersion"]) + 1)
        return copy.deepcopy(md)

    async def post_event(self, event: Mapping[str, Any]) -> None:
        self.calls.append("event")
        self.events.append(dict(event))


class Indexes:
    """Kopf-like indexes (key -> collection of values) over the fake cluster's objects."""

    def __init__(self, cluster: FakeCluster) -> None:
        self.cluster = cluster

    def owners(self) -> dict[Any, list[dict[str, Any]]]:
        return {
            (ns, name): [obj]
            for (kind, ns, name), obj in self.cluster.objects.items()
            if kind == constants.KIND
        }

    def children(self) -> dict[Any, list[dict[str, Any]]]:
        result: dict[Any, list[dict[str, Any]]] = {}
        for (kind, ns, _), obj in self.cluster.objects.items():
            if kind != constants.KIND:
                label = obj["metadata"]["labels"][constants.LABEL_MODEL_DEPLOYMENT]
                result.setdefault((ns, label), []).append(trim_child(obj))
        return result


def view_of(cluster: FakeCluster) -> ClusterView:
    """A view whose indexes mirror ``cluster`` right now (as after the watch caught up)."""
    indexes = Indexes(cluster)
    view = ClusterView()
    view.bind(owners=indexes.owners(), owner_labels={}, children=[indexes.children()], pods={})
    return view


async def run(cluster: FakeCluster, view: ClusterView | None = None, **kwargs: Any) -> Any:
    return await reconcile(
        ("default", "mlp"),
        view or view_of(cluster),
        cluster,
        OPTIONS,
        now=lambda: "2026-05-01T10:00:00Z",
        instance="test",
        **kwargs,
    )


def with_md(cluster: FakeCluster, body: dict[str, Any]) -> None:
    body = copy.deepcopy(body)
    body["metadata"]["resourceVersion"] = "1"
    cluster.objects[(constants.KIND, "default", "mlp")] = body


async def test_first_reconcile_applies_and_writes_status_then_nothing(owned_fields: Fields) -> None:
    cluster = FakeCluster(owned_fields)
    with_md(cluster, owner())
    outcome = await run(cluster)
    assert sorted(cluster.calls) == ["apply Deployment", "apply Service", "status"]
    assert outcome.writes == 3
    status = cluster.objects[(constants.KIND, "default", "mlp")]["status"]
    assert status["observedGeneration"] == 1
    cluster.calls.clear()
    outcome = await run(cluster)  # the watch caught up: level-based, nothing left to do
    assert cluster.calls == []
    assert outcome.writes == 0


async def test_own_writes_are_not_repeated_before_the_watch_catches_up(
    owned_fields: Fields,
) -> None:
    cluster = FakeCluster(owned_fields)
    with_md(cluster, owner())
    stale = view_of(cluster)  # indexes that have not seen the writes yet
    await run(cluster, view=stale)
    cluster.calls.clear()
    await run(cluster, view=stale)
    assert cluster.calls == []


async def test_deleted_or_deleting_owner_is_left_to_garbage_collection(
    owned_fields: Fields,
) -> None:
    cluster = FakeCluster(owned_fields)
    assert (await run(cluster)).writes == 0
    with_md(cluster, owner())
    cluster.objects[(constants.KIND, "default", "mlp")]["metadata"]["deletionTimestamp"] = (
        "2026-05-01T10:00:00Z"
    )
    assert (await run(cluster)).writes == 0
    assert cluster.calls == []


async def test_invalid_spec_reports_once_and_posts_one_event(owned_fields: Fields) -> None:
    cluster = FakeCluster(owned_fields)
    with_md(cluster, owner(replicas=-1))
    outcome = await run(cluster)
    assert cluster.calls == ["status", "event"]
    assert outcome.blocked is not None
    assert outcome.blocked.reason == "InvalidSpec"
    event = cluster.events[0]
    assert (event["type"], event["reason"]) == ("Warning", "InvalidSpec")
    assert event["involvedObject"]["uid"] == UID
    cluster.calls.clear()
    assert (await run(cluster)).writes == 0  # no retry storm, no event storm
    assert cluster.calls == []


async def test_transient_api_error_propagates_without_status_write(owned_fields: Fields) -> None:
    cluster = FakeCluster(owned_fields)
    with_md(cluster, owner())
    cluster.fail_apply = ApiError(500, "etcd leader changed", method="PATCH", path="/x")
    with pytest.raises(ApiError):
        await run(cluster)
    assert "status" not in cluster.calls


async def test_refused_apply_is_reported_and_retried_later(owned_fields: Fields) -> None:
    cluster = FakeCluster(owned_fields)
    with_md(cluster, owner())
    cluster.fail_apply = ApiError(
        422, 'admission webhook "policy" denied the request', reason="Invalid"
    )
    with pytest.raises(RetryLater) as raised:
        await run(cluster)
    assert raised.value.blocked.reason == "ApplyFailed"
    status = cluster.objects[(constants.KIND, "default", "mlp")]["status"]
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ApplyFailed")
    assert "denied the request" in ready["message"]
    assert [e["reason"] for e in cluster.events] == ["ApplyFailed"]


async def test_status_write_to_a_vanished_object_is_fine(owned_fields: Fields) -> None:
    cluster = FakeCluster(owned_fields)
    with_md(cluster, owner())
    cluster.fail_status = ApiError(404, "not found")
    outcome = await run(cluster)
    assert not outcome.status_written


async def test_drift_repairs_are_rate_limited(owned_fields: Fields) -> None:
    cluster = FakeCluster(owned_fields)
    with_md(cluster, owner())
    await run(cluster)
    guard = RepairGuard(cooldown_s=30.0)
    for _ in range(2):
        deployment = cluster.objects[("Deployment", "default", "mlp")]
        del deployment["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:replicas"]
        cluster.calls.clear()
        outcome = await run(cluster, guard=guard)
    assert cluster.calls == []  # the second repair within the cooldown is held back
    assert outcome.requeue_after is not None
    assert 29 < outcome.requeue_after <= 30


def test_memo_skips_repeated_work_but_sees_every_change(owned_fields: Fields) -> None:
    from ferry_operator.reconcile import Memo

    memo = Memo()
    body = owner()
    children = children_of(body, owned_fields)
    assert plan(body, children, OPTIONS, memo).apply == ()
    assert plan(body, children, OPTIONS, memo).apply == ()
    # The child changes (new resourceVersion) and lost a field: seen despite the memo.
    children[0]["metadata"]["resourceVersion"] = "101"
    del children[0]["metadata"]["managedFields"][0]["fieldsV1"]["f:spec"]["f:replicas"]
    assert [w.kind for w in plan(body, children, OPTIONS, memo).why] == ["drift"]
    # A new generation of the spec is rendered again.
    changed = owner(runtime={"threads": 2})
    changed["metadata"]["generation"] = 2
    assert [w.kind for w in plan(changed, children, OPTIONS, memo).why] == ["changed"]


def test_memo_is_bounded() -> None:
    from ferry_operator.reconcile import Memo

    memo = Memo(size=10)
    for index in range(25):
        memo.put(("k", index), index)
    assert memo.get(("k", 24)) == (True, 24)
    assert memo.get(("k", 0)) == (False, None)
    assert len(memo._entries) <= 10


def test_switching_autoscaling_on_hands_the_replica_count_over(owned_fields: Fields) -> None:
    children = children_of(owner(replicas=3), owned_fields)
    scaled = owner(
        replicas=3,
        autoscaling={"minReplicas": 2, "maxReplicas": 5},
        resources={"requests": {"cpu": "1"}},
    )
    decided = plan(scaled, children, OPTIONS)
    deployment = next(m for m in decided.apply if m["kind"] == "Deployment")
    assert "replicas" not in deployment["spec"]
    assert decided.handover == (
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "mlp", "namespace": "default"},
            "spec": {"replicas": 3},
        },
    )


def test_no_handover_while_ferry_owns_replicas_it_still_sets(owned_fields: Fields) -> None:
    children = children_of(owner(replicas=3), owned_fields)
    assert plan(owner(replicas=4), children, OPTIONS).handover == ()


async def test_handover_is_applied_before_the_deployment_drops_replicas(
    owned_fields: Fields,
) -> None:
    cluster = FakeCluster(owned_fields)
    with_md(cluster, owner(replicas=3))
    await run(cluster)
    cluster.calls.clear()
    with_md(
        cluster,
        owner(
            replicas=3,
            autoscaling={"minReplicas": 2, "maxReplicas": 5},
            resources={"requests": {"cpu": "1"}},
        ),
    )
    outcome = await run(cluster)
    handover = f"apply Deployment as {constants.REPLICAS_HANDOVER_MANAGER}"
    assert cluster.calls[0] == handover
    assert cluster.calls.index(handover) < cluster.calls.index("apply Deployment")
    assert outcome.handed_over == 1

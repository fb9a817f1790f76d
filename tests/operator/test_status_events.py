"""Events are posted on transitions only, with a well-formed core/v1 body."""

from __future__ import annotations

from typing import Any

from ferry_operator.events import Notice, event_body, notices


def status(ready: tuple[str, str], degraded: bool, generation: int = 1) -> dict[str, Any]:
    return {
        "observedGeneration": generation,
        "conditions": [
            {
                "type": "Ready",
                "status": ready[0],
                "reason": ready[1],
                "message": f"{ready[1]} detail",
            },
            {"type": "Degraded", "status": "True" if degraded else "False", "reason": "x"},
        ],
    }


def test_a_new_problem_is_one_warning() -> None:
    before = status(("False", "ModelLoading"), degraded=False)
    after = status(("False", "CrashLoopBackOff"), degraded=True)
    assert notices(before, after) == [
        Notice("Warning", "CrashLoopBackOff", "CrashLoopBackOff detail")
    ]
    assert notices(after, after) == []


def test_the_same_problem_in_a_new_generation_is_news() -> None:
    before = status(("False", "InvalidSpec"), degraded=True, generation=1)
    after = status(("False", "InvalidSpec"), degraded=True, generation=2)
    assert [n.reason for n in notices(before, after)] == ["InvalidSpec"]


def test_recovery_is_one_normal_event_and_progress_is_silent() -> None:
    broken = status(("False", "CrashLoopBackOff"), degraded=True)
    ready = status(("True", "AllReplicasReady"), degraded=False)
    assert [(n.type, n.reason) for n in notices(broken, ready)] == [("Normal", "AllReplicasReady")]
    loading = status(("False", "ModelLoading"), degraded=False)
    assert notices(None, loading) == []
    assert notices(loading, ready) == []


def test_event_body_names_the_object() -> None:
    owner = {
        "metadata": {"name": "mlp", "namespace": "team-a", "uid": "u-1", "resourceVersion": "7"}
    }
    body = event_body(owner, Notice("Warning", "InvalidSpec", "m" * 5000), now="T", instance="op-0")
    assert body["metadata"] == {"generateName": "mlp.", "namespace": "team-a"}
    assert body["involvedObject"] == {
        "apiVersion": "serving.ferry.dev/v1alpha1",
        "kind": "ModelDeployment",
        "name": "mlp",
        "namespace": "team-a",
        "uid": "u-1",
        "resourceVersion": "7",
    }
    assert (body["type"], body["reason"], body["count"]) == ("Warning", "InvalidSpec", 1)
    assert len(body["message"]) == 1024
    assert body["reportingComponent"] == "serving.ferry.dev/ferry-operator"
    assert body["reportingInstance"] == "op-0"

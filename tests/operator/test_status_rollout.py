"""Status while a rollout runs or after it stopped: conditions (kubectl wait, kstatus), counts
over both Deployments, status.rollout / status.revisions, and the Events they bring."""

from __future__ import annotations

from typing import Any

from ferry_operator import constants
from ferry_operator.events import notices
from ferry_operator.spec import ModelDeploymentStatus
from ferry_operator.status import Observation, Report, compute_status

NOW = "2026-05-01T10:00:00Z"


def deployment(name: str, revision: str, replicas: int, ready: int) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "generation": 1,
            "labels": {constants.LABEL_REVISION: revision},
        },
        "spec": {"replicas": replicas},
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": replicas,
            "readyReplicas": ready,
            "availableReplicas": ready,
        },
    }


STABLE = deployment("mlp", "aaaa", 3, 3)
CANARY = deployment("mlp-bbbb", "bbbb", 1, 1)
ROLLOUT = {
    "currentRevision": "bbbb",
    "stableRevision": "aaaa",
    "phase": "Progressing",
    "strategy": "Canary",
    "step": 1,
    "steps": 2,
    "weight": 25,
}
REVISIONS = [
    {"name": "bbbb", "model": "s3://m/2", "version": "2", "image": "i", "outcome": "Progressing"},
    {"name": "aaaa", "model": "s3://m/1", "version": "1", "image": "i", "outcome": "Serving"},
]


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def observe(report: Report | None, rollout: dict[str, Any]) -> dict[str, Any]:
    return compute_status(
        Observation(
            generation=2,
            deployment=STABLE,
            deployments=[STABLE, CANARY],
            report=report,
            rollout=rollout,
            revisions=REVISIONS,
            current_revision="bbbb",
        ),
        None,
        NOW,
    )


def test_a_running_canary_is_progressing_not_ready() -> None:
    report = Report("CanaryInProgress", "step 1/2 (25%)", progressing=True, degraded=False)
    status = observe(report, ROLLOUT)
    assert conditions(status) == {
        "Ready": ("False", "CanaryInProgress"),
        "Progressing": ("True", "CanaryInProgress"),
        "Degraded": ("False", "AsExpected"),
        "Reconciling": ("True", "CanaryInProgress"),
    }
    # Pods of both Deployments count; the updated ones are the spec's revision's.
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (4, 4, 1)
    assert status["rollout"] == ROLLOUT
    assert status["revisions"] == REVISIONS
    parsed = ModelDeploymentStatus.model_validate(status)
    assert parsed.model_dump(by_alias=True, exclude_none=True) == status


def test_an_aborted_rollout_is_degraded_and_stalled_with_its_figures() -> None:
    message = "canary bbbb failed its analysis at step 1/2 (25%): 50 of 50 requests failed"
    report = Report("RolloutAborted", message, progressing=False, degraded=True, stalled=True)
    before = observe(
        Report("CanaryInProgress", "step 1/2", progressing=True, degraded=False), ROLLOUT
    )
    after = observe(report, {**ROLLOUT, "phase": "Aborted", "message": message})
    assert conditions(after) == {
        "Ready": ("False", "RolloutAborted"),
        "Progressing": ("False", "RolloutAborted"),
        "Degraded": ("True", "RolloutAborted"),
        "Stalled": ("True", "RolloutAborted"),
    }
    degraded = next(c for c in after["conditions"] if c["type"] == "Degraded")
    assert degraded["message"] == message
    [event] = notices(before, after)
    assert (event.type, event.reason, event.message) == ("Warning", "RolloutAborted", message)
    assert notices(after, after) == []  # once per transition, not per reconcile

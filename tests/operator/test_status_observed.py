"""Status from recorded Deployment/Pod states (tests/testdata/observed), every reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_operator.status import Observation, assess, compute_status

OBSERVED = Path(__file__).resolve().parents[1] / "testdata" / "observed"
CASES = sorted(OBSERVED.glob("*.yaml"))
NOW = "2026-05-01T10:10:00Z"


def _load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict)
    return data


def _observation(case: dict[str, Any]) -> Observation:
    return Observation(
        generation=7,
        deployment=case["deployment"],
        pods=case.get("pods") or [],
        expected_replicas=case.get("expectedReplicas"),
    )


@pytest.mark.parametrize("path", CASES, ids=lambda path: path.stem)
def test_recorded_state(path: Path) -> None:
    case = _load(path)
    status = compute_status(_observation(case), None, NOW)
    conditions = {condition["type"]: condition for condition in status["conditions"]}
    for kind in ("Ready", "Progressing", "Degraded"):
        expected_status, expected_reason = case["expect"][kind]
        assert (conditions[kind]["status"], conditions[kind]["reason"]) == (
            expected_status,
            expected_reason,
        ), kind
        assert conditions[kind]["observedGeneration"] == 7
        assert conditions[kind]["lastTransitionTime"] == NOW
    if "message" in case["expect"]:
        assert case["expect"]["message"] in conditions["Ready"]["message"]
    assert ("Stalled" in conditions) is bool(case["expect"].get("stalled"))
    assert ("Reconciling" in conditions) is (conditions["Progressing"]["status"] == "True")


def test_every_reason_is_recorded() -> None:
    """The recorded states cover every reason the status can report from a Deployment."""
    seen = {_load(path)["expect"]["Ready"][1] for path in CASES}
    assert seen >= {
        "AllReplicasReady",
        "ScaledToZero",
        "RolloutInProgress",
        "ModelLoading",
        "ProgressDeadlineExceeded",
        "ReplicaFailure",
        "CrashLoopBackOff",
        "ImagePullBackOff",
        "ModelLoadFailed",
        "CreateContainerConfigError",
        "Unschedulable",
    }


def test_replica_counts_come_from_the_deployment() -> None:
    case = _load(OBSERVED / "rolling-update-old-pods.yaml")
    status = compute_status(_observation(case), None, NOW)
    assert (status["replicas"], status["readyReplicas"], status["updatedReplicas"]) == (3, 3, 2)


def test_image_pull_beats_a_crash_loop_in_another_pod() -> None:
    """The most serious problem across pods is reported (it is the one to fix first)."""
    pull = _load(OBSERVED / "image-pull-backoff.yaml")["pods"]
    crash = _load(OBSERVED / "crashloop.yaml")["pods"]
    deployment = _load(OBSERVED / "crashloop.yaml")["deployment"]
    verdict = assess(Observation(generation=1, deployment=deployment, pods=crash + pull))
    assert verdict.ready[1] == "ImagePullBackOff"


def test_a_runtime_load_failure_is_one_warning_event_with_the_runtimes_message() -> None:
    from ferry_operator.events import notices

    case = _load(OBSERVED / "runtime-model-load-failed.yaml")
    status = compute_status(_observation(case), None, NOW)
    (event,) = notices(None, status)
    assert (event.type, event.reason) == ("Warning", "ModelLoadFailed")
    assert "is an AOTInductor package: set the format to aot-inductor" in event.message
    again = compute_status(_observation(case), status, NOW)
    assert notices(status, again) == []


def test_a_server_that_loaded_after_an_earlier_load_failure_is_not_reported() -> None:
    case = _load(OBSERVED / "runtime-model-load-failed.yaml")
    container = case["pods"][0]["status"]["containerStatuses"][0]
    container.update(ready=True, started=True, state={"running": {}})
    verdict = assess(_observation(case))
    assert verdict.ready[1] != "ModelLoadFailed"

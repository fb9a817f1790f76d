"""The Argo CD health check (Lua) for ModelDeployment, run in a real Lua 5.1 interpreter.

Argo CD embeds gopher-lua (Lua 5.1); lupa's ``lua51`` runtime runs the same dialect. The cases
are the ones in ``health_test.yaml``, in Argo CD's own resource_customizations test format, so the
script can be contributed upstream as it is.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import lupa.lua51 as lupa_lua51  # dev extra: a real Lua 5.1 interpreter
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHECK_DIR = ROOT / "deploy" / "argocd" / "serving.ferry.dev" / "ModelDeployment"
HEALTH_LUA = CHECK_DIR / "health.lua"
CM_PATCH = ROOT / "deploy" / "argocd" / "argocd-cm-patch.yaml"
CM_KEY = "resource.customizations.health.serving.ferry.dev_ModelDeployment"


def _cases() -> list[dict[str, Any]]:
    tests = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())["tests"]
    assert isinstance(tests, list)
    return tests


def run_health_check(obj: dict[str, Any]) -> dict[str, str]:
    """Run health.lua the way Argo CD does: the object as global ``obj``, the chunk returns hs."""
    lua = lupa_lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(HEALTH_LUA.read_text())
    assert result is not None, "health.lua returned nothing"
    return {key: str(value) for key, value in dict(result).items()}


@pytest.mark.parametrize("case", _cases(), ids=lambda case: Path(case["inputPath"]).stem)
def test_health_status(case: dict[str, Any]) -> None:
    obj = yaml.safe_load((CHECK_DIR / case["inputPath"]).read_text())
    assert run_health_check(obj) == case["healthStatus"]


def test_every_testdata_file_has_a_case() -> None:
    listed = {Path(case["inputPath"]).name for case in _cases()}
    present = {path.name for path in (CHECK_DIR / "testdata").glob("*.yaml")}
    assert listed == present


def test_every_argo_health_status_the_script_returns_is_valid() -> None:
    valid = {"Healthy", "Progressing", "Degraded", "Suspended", "Missing", "Unknown"}
    assert {case["healthStatus"]["status"] for case in _cases()} <= valid


def test_ready_true_with_degraded_true_is_degraded() -> None:
    obj = yaml.safe_load((CHECK_DIR / "testdata" / "healthy.yaml").read_text())
    degraded = next(c for c in obj["status"]["conditions"] if c["type"] == "Degraded")
    degraded.update(status="True", reason="ProgressDeadlineExceeded", message="stuck")
    assert run_health_check(obj) == {
        "status": "Degraded",
        "message": "ProgressDeadlineExceeded: stuck",
    }


def test_argocd_cm_patch_embeds_the_same_script() -> None:
    patch = yaml.safe_load(CM_PATCH.read_text())
    assert patch["data"][CM_KEY] == HEALTH_LUA.read_text()


# ---------------------------------------------------------------------------------------------
# The operator's own status output, fed through the health check
# ---------------------------------------------------------------------------------------------

NOW = "2026-01-01T00:00:00Z"


def _deployment(
    *, replicas: int, updated: int, ready: int, deadline: bool = False
) -> dict[str, Any]:
    conditions = []
    if deadline:
        conditions.append(
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}
        )
    return {
        "metadata": {"name": "mlp", "generation": 1},
        "spec": {"replicas": 2},
        "status": {
            "observedGeneration": 1,
            "replicas": replicas,
            "updatedReplicas": updated,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "conditions": conditions,
        },
    }


_CRASHING_POD = {
    "metadata": {"name": "mlp-abc"},
    "status": {
        "phase": "Running",
        "conditions": [{"type": "PodScheduled", "status": "True"}],
        "containerStatuses": [
            {
                "name": "model-server",
                "ready": False,
                "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                "lastState": {"terminated": {"exitCode": 1, "message": "sha256 mismatch"}},
            }
        ],
    },
}


def _operator_status(**observation: Any) -> dict[str, Any]:
    from ferry_operator.errors import Blocked
    from ferry_operator.status import Observation, compute_status

    if "blocked" in observation:
        observation["blocked"] = Blocked(*observation["blocked"])
    return compute_status(Observation(generation=1, **observation), None, NOW)


@pytest.mark.parametrize(
    ("observation", "health"),
    [
        ({"deployment": None}, "Progressing"),
        ({"deployment": _deployment(replicas=2, updated=2, ready=2)}, "Healthy"),
        ({"deployment": _deployment(replicas=3, updated=1, ready=2)}, "Progressing"),
        (
            {"deployment": _deployment(replicas=2, updated=2, ready=0, deadline=True)},
            "Degraded",
        ),
        (
            {"deployment": _deployment(replicas=2, updated=2, ready=1), "pods": [_CRASHING_POD]},
            "Degraded",
        ),
        ({"blocked": ("InvalidSpec", "spec.model.uri: bad")}, "Degraded"),
    ],
    ids=["no-deployment", "ready", "rolling", "deadline", "crashloop", "invalid-spec"],
)
def test_operator_status_maps_to_argo_health(observation: dict[str, Any], health: str) -> None:
    md = {"metadata": {"name": "mlp", "generation": 1}, "status": _operator_status(**observation)}
    assert run_health_check(md)["status"] == health


def test_terminal_reasons_are_reasons_the_operator_writes() -> None:
    from ferry_operator import reconcile, status

    lua = HEALTH_LUA.read_text()
    block = lua[
        lua.index("local terminalReasons = {") : lua.index("}", lua.index("terminalReasons"))
    ]
    terminal = set(re.findall(r"^\s+(\w+) = true,$", block, re.MULTILINE))
    written = {
        value
        for module in (status, reconcile)
        for name, value in vars(module).items()
        if name.isupper() and isinstance(value, str) and value[:1].isupper() and " " not in value
    }
    assert terminal
    assert terminal <= written, terminal - written

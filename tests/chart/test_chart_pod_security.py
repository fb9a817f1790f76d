"""The operator pod meets Pod Security "restricted", checked field by field."""

from __future__ import annotations

import re
from typing import Any

import pytest
from chart_support import ROOT, one, render
from pod_security import restricted_violations

VALUES_CASES = [
    (),
    ("ha.yaml",),
    ("namespaced.yaml",),
    ("custom-image.yaml",),
    ("everything.yaml",),
]


def operator_pod(values_files: tuple[str, ...] = ()) -> dict[str, Any]:
    return dict(one(render(values_files), "Deployment")["spec"]["template"]["spec"])


@pytest.mark.parametrize("values_files", VALUES_CASES, ids=lambda v: "+".join(v) or "defaults")
def test_operator_pod_is_restricted(values_files: tuple[str, ...]) -> None:
    assert restricted_violations(operator_pod(values_files)) == []


def test_operator_container_has_a_read_only_root_and_a_writable_tmp() -> None:
    pod = operator_pod()
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
    assert {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]


def test_operator_runs_as_the_images_non_root_user() -> None:
    dockerfile = (ROOT / "operator" / "Dockerfile").read_text()
    match = re.search(r"^ARG FERRY_UID=(\d+)$", dockerfile, re.MULTILINE)
    assert match, "operator/Dockerfile declares ARG FERRY_UID"
    uid = int(match.group(1))
    assert uid != 0
    context = operator_pod()["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"], context["runAsNonRoot"]) == (
        uid,
        uid,
        True,
    )


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p.update(hostNetwork=True), "hostNetwork"),
        (lambda p: p["securityContext"].update(runAsUser=0), "runAsUser must not be 0"),
        (
            lambda p: (
                p["securityContext"].pop("runAsNonRoot"),
                p["containers"][0]["securityContext"].pop("runAsNonRoot"),
            ),
            "runAsNonRoot",
        ),
        (lambda p: p["securityContext"].pop("seccompProfile"), None),
        (lambda p: p["volumes"].append({"name": "h", "hostPath": {"path": "/"}}), "hostPath"),
        (lambda p: p["containers"][0]["securityContext"].update(privileged=True), "privileged"),
        (
            lambda p: p["containers"][0]["securityContext"].update(allowPrivilegeEscalation=True),
            "allowPrivilegeEscalation",
        ),
        (
            lambda p: p["containers"][0]["securityContext"].update(capabilities={"drop": []}),
            "drop must include ALL",
        ),
        (
            lambda p: p["containers"][0]["securityContext"]["capabilities"].update(
                add=["SYS_ADMIN"]
            ),
            "NET_BIND_SERVICE",
        ),
        (
            lambda p: p["containers"][0]["ports"][0].update(hostPort=8080),
            "hostPort",
        ),
        (
            lambda p: p["securityContext"].update(
                sysctls=[{"name": "kernel.msgmax", "value": "1"}]
            ),
            "kernel.msgmax",
        ),
    ],
)
def test_the_checker_catches_each_violation(change: Any, expected: str | None) -> None:
    pod = operator_pod()
    change(pod)
    if expected is None:  # seccomp removed from the pod, still set on the container: allowed
        assert restricted_violations(pod) == []
        pod["containers"][0]["securityContext"].pop("seccompProfile")
        expected = "seccompProfile"
    problems = restricted_violations(pod)
    assert any(expected in problem for problem in problems), problems

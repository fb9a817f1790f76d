"""values.yaml and values.schema.json: every key documented, unknown keys and bad types refused."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from chart_support import CHART, run_helm, template_args

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
VALUES_TEXT = (CHART / "values.yaml").read_text()
VALUES = yaml.safe_load(VALUES_TEXT)


def _helm_error(*set_values: str, set_string: tuple[str, ...] = ()) -> str:
    args = template_args(set_values=set_values)
    for item in set_string:
        args += ["--set-string", item]
    result = run_helm(*args)
    assert result.returncode != 0, f"helm accepted {set_values} {set_string}"
    return result.stderr


@pytest.mark.parametrize(
    ("set_value", "misspelt"),
    [
        ("replicaCount=2", "replicaCount"),
        ("image.repo=example.com/ferry", "repo"),
        ("ha.enable=true", "enable"),
        ("metrics.serviceMonitor.enable=true", "enable"),
        ("watchNamespace={a}", "watchNamespace"),
    ],
)
def test_a_misspelt_key_is_refused(set_value: str, misspelt: str) -> None:
    error = _helm_error(set_value)
    assert "values don't meet the specifications of the schema" in error
    assert misspelt in error


@pytest.mark.parametrize(
    "set_string",
    ["ha.enabled=yes", "liveness.port=http", "watchNamespaces=models", "rbac.create=no"],
)
def test_a_wrong_type_is_refused(set_string: str) -> None:
    error = _helm_error(set_string=(set_string,))
    assert "values don't meet the specifications of the schema" in error


@pytest.mark.parametrize(
    "set_value",
    [
        "logging.format=xml",
        "image.pullPolicy=Sometimes",
        "watchNamespaces={Not_A_Namespace}",
        "liveness.port=80",
        "image.digest=latest",
        "metrics.serviceMonitor.interval=often",
    ],
)
def test_an_invalid_value_is_refused(set_value: str) -> None:
    assert "values don't meet the specifications of the schema" in _helm_error(set_value)


@pytest.mark.parametrize(
    "permission",
    [
        "rbac.permissions[0].resource=*",
        "rbac.permissions[0].apiGroup=*",
        "rbac.permissions[0].verbs={*}",
        "rbac.permissions[0].resource=secrets",
        "rbac.permissions[0].verbs={escalate}",
    ],
)
def test_wildcards_and_secrets_cannot_be_granted(permission: str) -> None:
    assert "values don't meet the specifications of the schema" in _helm_error(permission)


def _schema_paths(node: dict[str, Any], prefix: str = "") -> list[str]:
    paths: list[str] = []
    for key, child in node.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        paths.append(path)
        paths += _schema_paths(child, path)
    return paths


def _has(values: Any, path: str) -> bool:
    for part in path.split("."):
        if not isinstance(values, dict) or part not in values:
            return False
        values = values[part]
    return True


def test_every_object_in_the_schema_refuses_unknown_keys() -> None:
    def walk(node: dict[str, Any], where: str) -> list[str]:
        problems = []
        closed = node.get("additionalProperties") is False
        if node.get("type") == "object" and "properties" in node and not closed:
            problems.append(where or "(root)")
        for key, child in node.get("properties", {}).items():
            problems += walk(child, f"{where}.{key}" if where else key)
        if isinstance(node.get("items"), dict):
            problems += walk(node["items"], f"{where}[]")
        return problems

    assert walk(SCHEMA, "") == []


def test_every_schema_key_has_a_default_in_values_yaml() -> None:
    valued_inside = ("resources.", "affinity.", "extraEnv.", "rbac.permissions.")
    missing = [
        path
        for path in _schema_paths(SCHEMA)
        if not path.startswith(valued_inside) and not _has(VALUES, path)
    ]
    assert missing == []


def test_every_key_in_values_yaml_is_commented() -> None:
    """Each mapping key (not list items, not keys inside a default Kubernetes object) sits right
    below a comment line at its own indentation."""
    lines = VALUES_TEXT.splitlines()
    key_line = re.compile(r"^(\s*)([A-Za-z][\w]*):")
    item_line = re.compile(r"^(\s*)- ")
    uncommented: list[str] = []
    stack: list[tuple[int, str]] = []
    for index, line in enumerate(lines):
        match = key_line.match(line) or item_line.match(line)
        if not match:
            continue
        indent = len(match.group(1))
        key = match.group(2) if match.re is key_line else "[]"
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([*(name for _, name in stack), key])
        stack.append((indent, key))
        if "[]" in path:
            continue  # list items are documented by the list's own comment
        if path.startswith("resources.") and path.count(".") > 1:
            continue  # quantities inside the documented requests / limits
        previous = lines[index - 1].strip() if index else ""
        if not previous.startswith("#"):
            uncommented.append(path)
    assert uncommented == []


def test_values_yaml_itself_passes_the_schema() -> None:
    import jsonschema

    jsonschema.Draft7Validator(SCHEMA).validate(VALUES)

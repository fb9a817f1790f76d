"""What kube-apiserver does with a CRD schema when an object is created, emulated without a cluster.

The order follows the API server: unknown fields are refused (``kubectl apply`` sends
``fieldValidation=Strict`` by default), structural defaults are applied (a defaulted parent is
defaulted again inside, so ``default: {...}`` lets nested defaults apply), the OpenAPI schema is
validated, then every ``x-kubernetes-validations`` CEL rule runs on each node present in the
object with ``self`` bound to that node. CEL is evaluated by a real CEL implementation (the
``common-expression-language`` package, Rust ``cel-interpreter``), whose regexes are RE2-style
like cel-go's.
"""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Iterator
from typing import Any

import cel
import jsonschema

Schema = dict[str, Any]

_JSON_SCHEMA_KEYS = frozenset(
    {
        "type",
        "enum",
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "pattern",
        "minItems",
        "maxItems",
        "maxProperties",
        "required",
    }
)


def child_path(path: str, name: str) -> str:
    """Kubernetes-style field path of a property below ``path``."""
    return f"{path}.{name}" if path else name


def strict_json_schema(node: Schema) -> Schema:
    """JSON Schema equivalent of a structural node under strict field validation.

    Objects with declared properties refuse unknown fields (what ``--validate=strict`` reports
    and pruning would otherwise drop); ``x-kubernetes-preserve-unknown-fields`` objects and the
    root ``metadata`` accept anything; ``x-kubernetes-int-or-string`` is its ``anyOf``.
    """
    out: Schema = {key: value for key, value in node.items() if key in _JSON_SCHEMA_KEYS}
    if node.get("x-kubernetes-int-or-string"):
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in node:
        out["properties"] = {
            name: strict_json_schema(child) for name, child in node["properties"].items()
        }
        if not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = strict_json_schema(node["additionalProperties"])
    if "items" in node:
        out["items"] = strict_json_schema(node["items"])
    return out


def apply_defaults(value: Any, node: Schema) -> Any:
    """Structural defaulting as the API server does it, on a copy of ``value``.

    Missing (or null, non-nullable) properties with a default get a copy of it, then defaulting
    recurses into every present property, item and map value, the fresh defaults included.
    Nulls with no default are pruned.
    """
    value = copy.deepcopy(value)
    _default_in_place(value, node)
    return value


def _default_in_place(value: Any, node: Schema) -> None:
    if isinstance(value, dict):
        properties: dict[str, Schema] = node.get("properties", {})
        for name, child in properties.items():
            if (name not in value or value[name] is None) and "default" in child:
                value[name] = copy.deepcopy(child["default"])
            elif name in value and value[name] is None and not child.get("nullable"):
                del value[name]
        extra = node.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                _default_in_place(item, properties[name])
            elif isinstance(extra, dict):
                _default_in_place(item, extra)
    elif isinstance(value, list) and "items" in node:
        for item in value:
            _default_in_place(item, node["items"])


def schema_errors(value: Any, node: Schema, path: str = "") -> list[str]:
    """OpenAPI schema problems (unknown fields included) and duplicate list-map keys."""
    validator = jsonschema.Draft202012Validator(strict_json_schema(node))
    problems = [
        f"{_json_path(path, error.absolute_path) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(value), key=lambda e: list(e.absolute_path))
    ]
    problems.extend(_duplicate_map_keys(value, node, path))
    return problems


def _json_path(base: str, parts: Any) -> str:
    path = base
    for part in parts:
        path = f"{path}[{part}]" if isinstance(part, int) else child_path(path, str(part))
    return path


def _duplicate_map_keys(value: Any, node: Schema, path: str) -> Iterator[str]:
    for child_value, child_node, child in walk_values(value, node, path):
        if child_node.get("x-kubernetes-list-type") != "map" or not isinstance(child_value, list):
            continue
        keys = child_node["x-kubernetes-list-map-keys"]
        seen: set[tuple[Any, ...]] = set()
        for index, item in enumerate(child_value):
            key = tuple(item.get(name) for name in keys)
            if key in seen:
                yield f"{child}[{index}]: Duplicate value: {dict(zip(keys, key, strict=True))}"
            seen.add(key)


def walk_values(value: Any, node: Schema, path: str = "") -> Iterator[tuple[Any, Schema, str]]:
    """Every (value, schema node, path) of an object, parents before children."""
    yield value, node, path
    if isinstance(value, dict):
        properties: dict[str, Schema] = node.get("properties", {})
        extra = node.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                yield from walk_values(item, properties[name], child_path(path, name))
            elif isinstance(extra, dict):
                yield from walk_values(item, extra, f"{path}[{name}]")
    elif isinstance(value, list) and "items" in node:
        for index, item in enumerate(value):
            yield from walk_values(item, node["items"], f"{path}[{index}]")


@functools.cache
def compile_rule(rule: str) -> cel.Program:
    """Parse a CEL rule once (raises ValueError on a syntax error)."""
    return cel.compile(rule)


def cel_errors(value: Any, node: Schema, path: str = "") -> list[str]:
    """Every failing (or failing to evaluate) CEL rule of the nodes present in ``value``."""
    problems: list[str] = []
    for item, item_node, item_path in walk_values(value, node, path):
        for rule in item_node.get("x-kubernetes-validations", []):
            where = f"{item_path}{rule.get('fieldPath', '')}"
            try:
                verdict = compile_rule(rule["rule"]).execute({"self": item})
            except Exception as error:  # an evaluation error refuses the object too
                problems.append(f"{where}: Invalid value: rule evaluation error: {error!r}")
                continue
            if verdict is not True:
                problems.append(f"{where}: Invalid value: {rule['message']}")
    return problems


def admit(obj: dict[str, Any], root: Schema) -> list[str]:
    """The API server's verdict on creating ``obj``: an empty list when it is accepted."""
    defaulted = apply_defaults(obj, root)
    problems = schema_errors(defaulted, root)
    if problems:
        return problems
    return cel_errors(defaulted, root)


_SELF_FIELDS = re.compile(r"\bself((?:\.[A-Za-z_][A-Za-z0-9_]*)+)(\s*\()?")


def rule_field_paths(rule: str) -> set[tuple[str, ...]]:
    """Field chains a rule reads through ``self`` (``self.a.b`` -> ("a", "b")); a trailing
    member call such as ``.matches(`` or ``.all(`` is not a field."""
    chains: set[tuple[str, ...]] = set()
    for match in _SELF_FIELDS.finditer(rule):
        parts = tuple(match.group(1).lstrip(".").split("."))
        if match.group(2):
            parts = parts[:-1]
        if parts:
            chains.add(parts)
    return chains


def walk_schema(node: Schema, path: str = "") -> Iterator[tuple[Schema, str]]:
    """Every schema node with its field path: ``spec.a``, ``spec.list[]``, ``spec.map.*``."""
    yield node, path
    for name, child in node.get("properties", {}).items():
        yield from walk_schema(child, child_path(path, name))
    if "items" in node:
        yield from walk_schema(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk_schema(node["additionalProperties"], f"{path}.*")


def schema_at(root: Schema, path: str) -> Schema:
    """The schema node at a path written as ``walk_schema`` writes it."""
    node = root
    for part in re.findall(r"[^.\[\]]+|\[\]", path):
        if part == "[]":
            node = node["items"]
        elif part == "*":
            node = node["additionalProperties"]
        else:
            node = node["properties"][part]
    return node

"""Which of the fields Ferry applies it still owns, read from ``metadata.managedFields``.

Server-side apply records, per field manager, the set of fields that manager owns
(``fieldsV1``). After a forced apply Ferry owns every field of its applied configuration. When
anyone else later changes one of those fields (``kubectl edit``, ``kubectl scale deployment``,
another controller), the API server moves that field's ownership to them: the field disappears
from Ferry's set. So "every field of the manifest is still in Ferry's set" means nobody changed
what Ferry manages, and "a field is missing" means drift to undo. Foreign additions that do not
touch Ferry's fields (``kubectl rollout restart``'s annotation, a mesh's annotations, the HPA
writing ``replicas`` through the scale subresource when Ferry leaves replicas out) are not drift.

``fieldsV1`` syntax (https://kubernetes.io/docs/reference/using-api/server-side-apply/):
``f:<name>`` a field, ``k:<json>`` a list item by its merge keys, ``v:<json>`` a set item,
``.`` the item itself. A leaf ``{}`` owns the whole value (scalars, atomic lists and atomic
structs such as a LabelSelector).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from typing import Any

FieldSet = Mapping[str, Any]

# Never part of a field set: the API server strips type and identity metadata from every
# manager's fields (structured-merge-diff's stripMetaManager).
STRIPPED_METADATA = frozenset(
    {
        "name",
        "namespace",
        "creationTimestamp",
        "selfLink",
        "uid",
        "clusterName",
        "generation",
        "managedFields",
        "resourceVersion",
    }
)


def applied_fields(
    managed_fields: Sequence[Mapping[str, Any]] | None, manager: str
) -> FieldSet | None:
    """``manager``'s Apply field set on the main resource, or ``None`` when it owns nothing."""
    for entry in managed_fields or ():
        if (
            entry.get("manager") == manager
            and entry.get("operation") == "Apply"
            and not entry.get("subresource")
        ):
            fields = entry.get("fieldsV1")
            return fields if isinstance(fields, Mapping) else {}
    return None


def missing_fields(manifest: Mapping[str, Any], owned: FieldSet, limit: int = 5) -> list[str]:
    """Paths (at most ``limit``) that ``manifest`` sets but ``owned`` no longer covers.

    ``apiVersion``, ``kind`` and identity metadata (:data:`STRIPPED_METADATA`) are never in a
    field set; ``None`` values, empty maps and empty lists set nothing and are not required.
    """
    missing: list[str] = []
    for key, value in manifest.items():
        if key in {"apiVersion", "kind"}:
            continue
        if key == "metadata" and isinstance(value, Mapping):
            kept = {name: item for name, item in value.items() if name not in STRIPPED_METADATA}
            _check(kept, owned.get(f"f:{key}"), key, missing, limit)
        else:
            _check(value, owned.get(f"f:{key}"), key, missing, limit)
    return missing[:limit]


def _check(value: Any, node: Any, path: str, missing: list[str], limit: int) -> None:
    if len(missing) >= limit or _sets_nothing(value):
        return
    if node is None:
        missing.append(path)
        return
    if not isinstance(node, Mapping) or not node:
        return  # a leaf: the whole value is owned (scalar, atomic list or atomic struct)
    if isinstance(value, Mapping):
        for key, item in value.items():
            _check(item, node.get(f"f:{key}"), f"{path}.{key}", missing, limit)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, _list_item(node, item), f"{path}[{index}]", missing, limit)


def _sets_nothing(value: Any) -> bool:
    """``None``, an empty map or list, or a map of only such values."""
    if value is None:
        return True
    if isinstance(value, list):
        return not value
    if isinstance(value, Mapping):
        return all(_sets_nothing(item) for item in value.values())
    return False


@functools.lru_cache(maxsize=4096)
def _merge_keys(key: str) -> dict[str, Any] | None:
    """The merge keys of a ``k:{...}`` entry (parsed once per distinct entry)."""
    try:
        parsed = json.loads(key[2:])
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _list_item(node: Mapping[str, Any], item: Any) -> Any:
    """The field-set node of one list item: by merge keys (``k:``) or by value (``v:``)."""
    if not isinstance(item, Mapping):
        return node.get(f"v:{json.dumps(item, separators=(',', ':'))}")
    fallback = None
    for key, child in node.items():
        merge_keys = _merge_keys(key) if key.startswith("k:") else None
        if merge_keys is None:
            continue
        if all(item.get(name) == wanted for name, wanted in merge_keys.items()):
            return child
        # A key the manifest leaves out was defaulted by the server (a port's protocol: TCP).
        if fallback is None and all(
            name not in item or item[name] == wanted for name, wanted in merge_keys.items()
        ):
            fallback = child
    return fallback

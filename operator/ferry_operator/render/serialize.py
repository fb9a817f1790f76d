"""Manifests as YAML, byte-for-byte reproducible."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml


def manifests_yaml(objects: Iterable[dict[str, Any]]) -> str:
    """A multi-document YAML stream (``---`` before each object), keys sorted."""
    return yaml.safe_dump_all(
        list(objects),
        explicit_start=True,
        sort_keys=True,
        default_flow_style=False,
        allow_unicode=True,
        width=1 << 20,  # never fold long strings
    )

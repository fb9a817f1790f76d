"""Golden files: what each example renders to, byte for byte.

After an intended change, regenerate with ``FERRY_UPDATE_GOLDEN=1 pytest
tests/operator/test_render_golden.py`` and review the diff in version control.
"""

from __future__ import annotations

import difflib
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_operator.render import RenderOptions, render_children
from ferry_operator.render.serialize import manifests_yaml
from ferry_operator.spec import parse_model_deployment

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
GOLDEN_DIR = ROOT / "tests" / "testdata" / "golden"
UPDATE = os.environ.get("FERRY_UPDATE_GOLDEN") == "1"


def example_object(path: Path) -> dict[str, Any]:
    """The example with a uid (as the API server would add), so ownerReferences render."""
    obj: dict[str, Any] = yaml.safe_load(path.read_text(encoding="utf-8"))
    obj["metadata"]["uid"] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"ferry-example:{path.name}"))
    return obj


def render_example(obj: dict[str, Any]) -> str:
    return manifests_yaml(render_children(parse_model_deployment(obj), RenderOptions()))


def _reversed(value: Any) -> Any:
    """The same data with every mapping's insertion order reversed."""
    if isinstance(value, dict):
        return {key: _reversed(value[key]) for key in reversed(list(value))}
    if isinstance(value, list):
        return [_reversed(item) for item in value]
    return value


def test_there_are_examples_and_a_golden_file_for_each() -> None:
    assert len(EXAMPLES) >= 6
    goldens = {path.name for path in GOLDEN_DIR.glob("*.yaml")}
    examples = {path.name for path in EXAMPLES}
    if not UPDATE:
        assert goldens == examples, "stale or missing golden files"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_example_matches_its_golden_file(example: Path) -> None:
    actual = render_example(example_object(example))
    golden = GOLDEN_DIR / example.name
    if UPDATE:
        GOLDEN_DIR.mkdir(parents=True, exist_ok=True)
        golden.write_text(actual, encoding="utf-8")
    expected = golden.read_text(encoding="utf-8") if golden.exists() else ""
    if actual != expected:
        diff = "".join(
            difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                fromfile=f"golden/{example.name}",
                tofile="rendered",
            )
        )
        pytest.fail(
            f"{example.name} renders differently (FERRY_UPDATE_GOLDEN=1 to accept):\n{diff}"
        )


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.stem)
def test_rendering_is_deterministic(example: Path) -> None:
    obj = example_object(example)
    first = render_example(obj)
    assert render_example(obj) == first
    assert render_example(_reversed(obj)) == first, "input key order must not matter"
    # The objects themselves (what the operator applies) are canonical too, not just the YAML.
    md = parse_model_deployment(obj)
    reordered = parse_model_deployment(_reversed(obj))
    assert repr(render_children(md, RenderOptions())) == repr(
        render_children(reordered, RenderOptions())
    )

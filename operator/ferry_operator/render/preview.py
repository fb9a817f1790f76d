"""``ferry-operator render FILE``: print what the operator would create, like ``helm template``.

Every ModelDeployment in the file is validated and rendered; other documents (a Secret next
to an example, say) are skipped with a note on stderr. Problems go to stderr, one line each,
naming the document and the field, and the exit status is non-zero.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

import yaml

from ferry_operator import constants
from ferry_operator.render import RenderError, RenderOptions, render_children, render_warnings
from ferry_operator.render.serialize import manifests_yaml
from ferry_operator.spec import SpecError, parse_model_deployment

EXIT_OK = 0
EXIT_INVALID = 1


class PreviewError(Exception):
    """A file the preview cannot render; each problem is one line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def _describe(index: int, document: Any) -> str:
    name = None
    if isinstance(document, dict) and isinstance(document.get("metadata"), dict):
        name = document["metadata"].get("name")
    return f"document {index + 1}" + (f" ({name})" if name else "")


def render_documents(
    documents: list[Any], options: RenderOptions
) -> tuple[list[dict[str, Any]], list[str]]:
    """Render every ModelDeployment in ``documents``; return the children and notes.

    Raises :class:`PreviewError` listing every problem found in any document.
    """
    children: list[dict[str, Any]] = []
    notes: list[str] = []
    problems: list[str] = []
    rendered = 0
    for index, document in enumerate(documents):
        if document is None:
            continue
        where = _describe(index, document)
        if not isinstance(document, dict):
            problems.append(f"{where}: not a mapping")
            continue
        if document.get("kind") != constants.KIND:
            notes.append(
                f"{where}: skipped, kind {document.get('kind')!r} is not a ModelDeployment"
            )
            continue
        try:
            md = parse_model_deployment(document)
            # The preview may lack a uid: then it renders no ownerReferences.
            children.extend(render_children(md, options))
        except SpecError as error:
            problems.extend(f"{where}: {problem}" for problem in error.problems)
            continue
        except RenderError as error:
            problems.append(f"{where}: {error}")
            continue
        notes.extend(f"{where}: warning: {warning}" for warning in render_warnings(md))
        rendered += 1
    if not problems and rendered == 0:
        problems.append("no ModelDeployment found")
    if problems:
        raise PreviewError(problems)
    return children, notes


def render_text(text: str, options: RenderOptions) -> tuple[str, list[str]]:
    """YAML in, YAML out (plus notes for stderr); raises :class:`PreviewError`."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as error:
        raise PreviewError([f"invalid YAML: {error}"]) from None
    children, notes = render_documents(documents, options)
    return manifests_yaml(children), notes


def render_file_command(
    path: Path,
    runtime_image: str | None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """Print the manifests ``path`` (``-``: stdin) yields; return the exit status."""
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    options = RenderOptions(require_owner=False)
    if runtime_image is not None:
        options = RenderOptions(runtime_image=runtime_image, require_owner=False)
    source = "<stdin>" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        err.write(f"ferry-operator render: {source}: cannot read: {error}\n")
        return EXIT_INVALID
    try:
        manifests, notes = render_text(text, options)
    except PreviewError as error:
        for problem in error.problems:
            err.write(f"ferry-operator render: {source}: {problem}\n")
        return EXIT_INVALID
    for note in notes:
        err.write(f"ferry-operator render: {source}: {note}\n")
    out.write(manifests)
    return EXIT_OK

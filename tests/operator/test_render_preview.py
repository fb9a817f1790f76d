"""``ferry-operator render FILE``: manifests on stdout, problems on stderr naming the field."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from ferry_operator.cli import main

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_EXAMPLE = ROOT / "examples" / "modeldeployment.yaml"

GOOD = """\
apiVersion: serving.ferry.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: demo
spec:
  model:
    uri: https://models.example.com/demo/model.tar.gz
  replicas: 2
"""


def run_cli(
    args: list[str], capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[dict[str, Any]], str]:
    code = main(["render", *args])
    captured = capsys.readouterr()
    documents = [doc for doc in yaml.safe_load_all(captured.out) if doc is not None]
    return code, documents, captured.err


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "md.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_the_console_script_prints_the_default_example_reproducibly() -> None:
    outputs = []
    for seed in ("1", "2"):
        result = subprocess.run(
            [sys.executable, "-m", "ferry_operator.cli", "render", str(DEFAULT_EXAMPLE)],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1], "same file → byte-identical output, whatever the hash seed"
    documents = list(yaml.safe_load_all(outputs[0]))
    assert [doc["kind"] for doc in documents] == ["Deployment", "Service"]
    # A file has no uid, so the preview renders no ownerReferences (it could not be applied
    # with a dangling owner).
    assert all("ownerReferences" not in doc["metadata"] for doc in documents)


def test_good_file_renders_all_children(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, documents, err = run_cli([write(tmp_path, GOOD)], capsys)
    assert code == 0
    assert err == ""
    assert [doc["kind"] for doc in documents] == ["Deployment", "Service", "PodDisruptionBudget"]


def test_runtime_image_override(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, documents, _ = run_cli(
        [write(tmp_path, GOOD), "--runtime-image", "registry.test/rt:dev"], capsys
    )
    assert code == 0
    pod = documents[0]["spec"]["template"]["spec"]
    assert {c["image"] for c in [*pod["containers"], *pod["initContainers"]]} == {
        "registry.test/rt:dev"
    }


def test_an_object_with_a_uid_gets_owner_references(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace("  name: demo\n", "  name: demo\n  uid: 1234-abcd\n")
    code, documents, _ = run_cli([write(tmp_path, text)], capsys)
    assert code == 0
    for doc in documents:
        (owner,) = doc["metadata"]["ownerReferences"]
        assert owner["uid"] == "1234-abcd"
        assert owner["controller"] is True


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("  replicas: 2\n", "  replicas: -1\n"), "spec.replicas: "),
        (("  replicas: 2\n", "  replicas: 2\n  replica: 3\n"), "spec.replica: unknown field"),
        (
            ("    uri: https://models.example.com/demo/model.tar.gz\n", "    uri: ftp://x/y\n"),
            "spec.model.uri",
        ),
        (
            ("  replicas: 2\n", "  autoscaling: {minReplicas: 5, maxReplicas: 2}\n"),
            "spec.autoscaling.minReplicas must be less than or equal to maxReplicas",
        ),
        (
            (
                "    uri: https://models.example.com/demo/model.tar.gz\n",
                "    uri: file:///srv/models/demo\n",
            ),
            "spec.model.uri: file:// URIs are for local mode only",
        ),
        (
            ("  replicas: 2\n", "  rollout: {maxSurge: 0, maxUnavailable: 0}\n"),
            "spec.rollout: maxSurge and maxUnavailable cannot both be 0",
        ),
    ],
)
def test_bad_file_names_the_field_and_fails(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: tuple[str, str],
    expected: str,
) -> None:
    text = GOOD.replace(*change)
    assert text != GOOD
    path = write(tmp_path, text)
    code, documents, err = run_cli([path], capsys)
    assert code != 0
    assert documents == [], "nothing on stdout when the file is bad"
    assert expected in err
    assert f"{path}: document 1 (demo): " in err


def test_every_problem_in_every_document_is_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad_one = GOOD.replace("  replicas: 2\n", "  replicas: many\n  extra: 1\n")
    bad_two = GOOD.replace("name: demo", "name: other").replace("replicas: 2", "replicas: -3")
    code, _, err = run_cli([write(tmp_path, f"{bad_one}---\n{bad_two}")], capsys)
    assert code == 1
    assert "document 1 (demo): spec.replicas: " in err
    assert "document 1 (demo): spec.extra: unknown field" in err
    assert "document 2 (other): spec.replicas: " in err


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("spec: [unclosed\n", "invalid YAML"),
        ("", "no ModelDeployment found"),
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "no ModelDeployment found"),
        ("- just\n- a list\n", "not a mapping"),
    ],
)
def test_files_without_a_usable_model_deployment_fail(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    code, documents, err = run_cli([write(tmp_path, text)], capsys)
    assert code == 1
    assert documents == []
    assert expected in err


def test_missing_file_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli([str(tmp_path / "absent.yaml")], capsys)
    assert code == 1
    assert "cannot read" in err


def test_other_kinds_are_skipped_with_a_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: creds}\nstringData: {A: b}\n"
    code, documents, err = run_cli([write(tmp_path, f"{secret}---\n{GOOD}")], capsys)
    assert code == 0
    assert [doc["kind"] for doc in documents] == ["Deployment", "Service", "PodDisruptionBudget"]
    assert "document 1 (creds): skipped, kind 'Secret' is not a ModelDeployment" in err


def test_warnings_go_to_stderr_without_failing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = GOOD.replace("  replicas: 2\n", "  autoscaling: {maxReplicas: 3}\n")
    code, documents, err = run_cli([write(tmp_path, text)], capsys)
    assert code == 0
    assert "HorizontalPodAutoscaler" in [doc["kind"] for doc in documents]
    assert "warning: spec.autoscaling: spec.resources.requests.cpu is not set" in err


def test_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(GOOD))
    code, documents, _ = run_cli(["-"], capsys)
    assert code == 0
    assert documents[0]["metadata"]["name"] == "demo"

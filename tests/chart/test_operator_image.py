"""The operator image (operator/Dockerfile): built from the local base with --network none and run
the way the chart runs it — non-root uid 10001, read-only root filesystem with a tmpfs /tmp, all
capabilities dropped, no privilege escalation.

The build test is opt-in (FERRY_TEST_IMAGE=1, like the runtime image's): it needs a container
engine (or root to start a private dockerd, see scripts/docker-engine.sh) and a minute or two.
"""

from __future__ import annotations

import os
import re
import subprocess

import pytest
from chart_support import ROOT

DOCKERFILE = ROOT / "operator" / "Dockerfile"
TAG = "ferry-operator:test"
POD_LIKE = [
    "--read-only",
    "--tmpfs",
    "/tmp:rw,nosuid,nodev,mode=1777",
    "--user",
    "10001:10001",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--network",
    "none",
]


def test_dockerfile_builds_from_a_base_image_argument_as_a_numeric_non_root_user() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^ARG BASE_IMAGE=\S+$", text, re.MULTILINE)
    stages = re.findall(r"^FROM (\S+)", text, re.MULTILINE)
    assert stages == ["${BASE_IMAGE}", "${BASE_IMAGE}"]
    users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
    assert users == ["${FERRY_UID}:${FERRY_UID}"]
    uid = re.search(r"^ARG FERRY_UID=(\d+)$", text, re.MULTILINE)
    assert uid is not None
    assert int(uid.group(1)) > 0


def test_dockerfile_installs_the_operator_extra_only() -> None:
    text = DOCKERFILE.read_text()
    installs = re.findall(r'"ferry\[([a-z,]+)\]"', text)
    assert installs == ["operator"]


@pytest.fixture(scope="module")
def engine_env() -> dict[str, str]:
    if os.environ.get("FERRY_TEST_IMAGE") != "1":
        pytest.skip("builds the operator image with a container engine; opt in: FERRY_TEST_IMAGE=1")
    probe = subprocess.run(
        [
            "bash",
            "-c",
            'source scripts/docker-engine.sh && ferry_ensure_engine && echo "${DOCKER_HOST:-}"',
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    if probe.returncode != 0:
        pytest.fail(f"no container engine: {probe.stderr.strip()}")
    env = dict(os.environ)
    if probe.stdout.strip():
        env["DOCKER_HOST"] = probe.stdout.strip()
    return env


@pytest.fixture(scope="module")
def image(engine_env: dict[str, str]) -> str:
    build = subprocess.run(
        ["bash", "scripts/build-operator-image.sh", TAG],
        cwd=ROOT,
        env=engine_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    return TAG


def run(env: dict[str, str], image: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "run", "--rm", *POD_LIKE, image, *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


@pytest.mark.image
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_image_prints_the_committed_crd(engine_env: dict[str, str], image: str) -> None:
    result = run(engine_env, image, "crd")
    assert result.returncode == 0, result.stderr
    committed = (ROOT / "crds" / "serving.ferry.dev_modeldeployments.yaml").read_text()
    assert result.stdout == committed


@pytest.mark.image
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_image_holds_no_runtime_dependencies(engine_env: dict[str, str], image: str) -> None:
    probe = (
        "import getpass, importlib.util as u, os; "
        "print(os.getuid(), getpass.getuser(), "
        "[m for m in ('torch', 'numpy', 'pip', 'setuptools', 'kubernetes', 'ferry_runtime') "
        "if u.find_spec(m)])"
    )
    result = subprocess.run(
        ["docker", "run", "--rm", *POD_LIKE, "--entrypoint", "python3", image, "-c", probe],
        env=engine_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    # Kopf's peering identity needs getpass.getuser(): the uid must have a passwd entry.
    assert result.stdout.split() == ["10001", "ferry", "[]"]


@pytest.mark.image
@pytest.mark.slow
@pytest.mark.timeout(1500)
def test_run_without_a_cluster_fails_cleanly(engine_env: dict[str, str], image: str) -> None:
    result = run(engine_env, image, "run", "--standalone")
    assert result.returncode != 0
    assert "cannot log in to the API server" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr

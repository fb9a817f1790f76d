"""The runtime image, built from a local debootstrap base with --network none, run like a pod.

Opt-in (FERRY_TEST_IMAGE=1): needs a container engine, or root to start a private dockerd,
and a few minutes. docs/runtime-image.md has the manual steps and timings. The container runs
the way the operator's pods do: non-root uid 10001, read-only root filesystem with a tmpfs
/tmp, all capabilities dropped, no privilege escalation; `fetch` (the init container) fills a
model directory over HTTP, then `serve` serves it read-only, answers inference, and exits
cleanly on SIGTERM (`docker stop`). An AOTInductor package (`model.pt2`, made by
`ferry-runtime package` on the host) is served the same way: the image has no compiler and
needs none, and the compiled library is extracted to the tmpfs /tmp only.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from ferry_runtime.digest import file_sha256
from fetch_fixtures import (
    ModelHttpServer,
    make_model_dir,
    serve_http,
    tar_gz_bytes,
    torchscript_allowed,
)

pytestmark = [
    pytest.mark.image,
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(
        os.environ.get("FERRY_TEST_IMAGE") != "1",
        reason="builds and runs the runtime image with a local container engine; "
        "opt in with FERRY_TEST_IMAGE=1 (docs/runtime-image.md)",
    ),
]

REPO = Path(__file__).resolve().parents[2]
UID = "10001"
POD_LIKE = [
    "--read-only",
    "--tmpfs",
    # exec: like the pod's /tmp emptyDir (docker's tmpfs default is noexec, Kubernetes'
    # emptyDir is not); AOTInductor packages dlopen their library from there.
    "/tmp:rw,exec,nosuid,nodev,mode=1777",
    "--user",
    f"{UID}:{UID}",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--network",
    "host",
]


def engine_env() -> dict[str, str]:
    """The environment (DOCKER_HOST) under which the engine the build scripts use answers."""
    probe = subprocess.run(
        [
            "bash",
            "-c",
            'source scripts/docker-engine.sh && ferry_ensure_engine && echo "${DOCKER_HOST:-}"',
        ],
        cwd=REPO,
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


def docker(
    env: dict[str, str], *args: str, check: bool = True, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [os.environ.get("DOCKER", "docker"), *args],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {result.stderr}{result.stdout}")
    return result


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def engine() -> dict[str, str]:
    return engine_env()


@pytest.fixture(scope="module")
def image(engine: dict[str, str]) -> str:
    """The image under test: FERRY_IMAGE if given, else built now by the build script."""
    given = os.environ.get("FERRY_IMAGE")
    if given:
        return given
    tag = "ferry-runtime:image-test"
    started = time.monotonic()
    build = subprocess.run(
        ["bash", "scripts/build-runtime-image.sh", tag],
        cwd=REPO,
        env=engine,
        capture_output=True,
        text=True,
        check=False,
        timeout=1100,
    )
    assert build.returncode == 0, (
        f"image build failed:\n{build.stdout[-4000:]}{build.stderr[-4000:]}"
    )
    print(f"built {tag} in {time.monotonic() - started:.0f}s")
    return tag


@pytest.fixture
def model_source(tmp_path: Path) -> Path:
    source = make_model_dir(tmp_path / "source")
    for path in (source, *source.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return source


@pytest.fixture
def container_name(engine: dict[str, str]) -> Iterator[str]:
    name = f"ferry-image-test-{uuid.uuid4().hex[:8]}"
    yield name
    docker(engine, "rm", "--force", name, check=False)


def test_image_runs_as_non_root_with_ferry_runtime_as_pid_1(
    engine: dict[str, str], image: str
) -> None:
    config = json.loads(docker(engine, "image", "inspect", image).stdout)[0]["Config"]
    assert config["User"] == f"{UID}:{UID}"
    assert config["Entrypoint"] == ["ferry-runtime"]
    assert config["Cmd"] == ["serve"]
    assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/tcp"}
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["HOME"] == "/tmp"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    owner = docker(engine, "run", "--rm", "--entrypoint", "stat", image, "-c", "%u", "/models")
    assert owner.stdout.strip() == UID


def test_fetch_then_serve_read_only_then_drain_on_sigterm(
    engine: dict[str, str],
    image: str,
    model_source: Path,
    tmp_path: Path,
    container_name: str,
) -> None:
    import torch

    digest = file_sha256(model_source / "model.pt")
    models = tmp_path / "models"  # plays the pod's emptyDir
    models.mkdir()
    shutil.chown(models, int(UID), int(UID))

    # 1. The init container: fetch over HTTP from a loopback server into the "emptyDir".
    archive = {"/m/model.tar.gz": tar_gz_bytes(model_source)}
    with serve_http(ModelHttpServer(files=archive)) as server:
        fetch = docker(
            engine,
            "run",
            "--rm",
            *POD_LIKE,
            "-v",
            f"{models}:/models",
            image,
            "fetch",
            server.url("/m/model.tar.gz"),
            "/models",
            "--sha256",
            digest,
            timeout=300,
        )
    assert fetch.returncode == 0, fetch.stderr
    assert (models / ".ferry-complete").is_file()
    assert file_sha256(models / "model.pt") == digest

    # 2. The serving container: model directory mounted read-only.
    http_port = serve_read_only(engine, image, container_name, models, digest)
    base = f"http://127.0.0.1:{http_port}"
    wait_ready(engine, container_name, base, 180)

    rows = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]]
    reply = httpx.post(
        f"{base}/v2/models/model/infer",
        json={
            "inputs": [
                {
                    "name": "INPUT__0",
                    "datatype": "FP32",
                    "shape": [2, 4],
                    "data": [x for row in rows for x in row],
                }
            ]
        },
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    output = reply.json()["outputs"][0]
    assert output["name"] == "OUTPUT__0"
    assert output["shape"] == [2, 2]
    with torchscript_allowed():
        expected = torch.jit.load(str(model_source / "model.pt"))(torch.tensor(rows))
    assert torch.allclose(torch.tensor(output["data"]).reshape(2, 2), expected, atol=1e-6)

    # 3. SIGTERM (docker stop): a clean exit well before the 30s grace period runs out.
    stop_started = time.monotonic()
    docker(engine, "stop", "--time", "30", container_name, timeout=60)
    stop_took = time.monotonic() - stop_started
    state = json.loads(docker(engine, "inspect", container_name).stdout)[0]["State"]
    logs = docker(engine, "logs", container_name, check=False)
    assert state["ExitCode"] == 0, f"exit {state['ExitCode']}:\n{logs.stdout}{logs.stderr}"
    assert not state["OOMKilled"]
    assert stop_took < 25, f"docker stop took {stop_took:.1f}s: SIGTERM was not handled"
    print(f"stopped cleanly in {stop_took:.1f}s")


def serve_read_only(
    engine: dict[str, str],
    image: str,
    container_name: str,
    models: Path,
    digest: str,
    *env: str,
) -> int:
    """Start the serving container as a restricted pod would run it, the model directory
    mounted read-only (gRPC on a free port too); returns its HTTP port on loopback."""
    http_port, grpc_port = free_port(), free_port()
    settings = [
        "FERRY_RUNTIME_HOST=127.0.0.1",
        f"FERRY_RUNTIME_HTTP_PORT={http_port}",
        f"FERRY_RUNTIME_GRPC_PORT={grpc_port}",
        f"FERRY_RUNTIME_MODEL_SHA256={digest}",
        *env,
    ]
    environment = [arg for setting in settings for arg in ("-e", setting)]
    docker(
        engine,
        "run",
        "--detach",
        "--name",
        container_name,
        *POD_LIKE,
        "-v",
        f"{models}:/models:ro",
        *environment,
        image,
    )
    return http_port


def wait_ready(engine: dict[str, str], container_name: str, base: str, seconds: float) -> None:
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        state = docker(engine, "inspect", "--format", "{{.State.Running}}", container_name)
        if state.stdout.strip() != "true":
            logs = docker(engine, "logs", container_name, check=False)
            pytest.fail(f"the container exited before it was ready:\n{logs.stdout}{logs.stderr}")
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=2).status_code == 200:
                print(f"ready {time.monotonic() - started:.1f}s after docker run")
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    logs = docker(engine, "logs", container_name, check=False)
    pytest.fail(f"not ready after {seconds:.0f}s:\n{logs.stdout}{logs.stderr}")


def test_the_image_has_no_compiler(engine: dict[str, str], image: str) -> None:
    probe = docker(
        engine,
        "run",
        "--rm",
        "--entrypoint",
        "sh",
        image,
        "-c",
        "command -v c++ g++ gcc cc clang; "
        "test -d /opt/ferry/lib/python3*/site-packages/torch/include",
        check=False,
    )
    assert probe.stdout.strip() == "", f"a compiler is in the image: {probe.stdout}"
    assert probe.returncode != 0  # and torch's C++ headers are trimmed


def test_serves_an_aot_inductor_package_read_only_as_non_root_through_front_ends(
    engine: dict[str, str],
    image: str,
    pt2_dirs: dict[str, Path],
    tmp_path: Path,
    container_name: str,
) -> None:
    import torch
    from pt2_helpers import IN_FEATURES, eager

    models = tmp_path / "models"
    shutil.copytree(pt2_dirs["aot-inductor"], models)
    (models / "model.json").unlink()  # the package's own signature is enough
    for path in (models, *models.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    digest = file_sha256(models / "model.pt2")
    # with two front-end processes: PID 1 starts, serves through and stops its children
    http_port = serve_read_only(
        engine,
        image,
        container_name,
        models,
        digest,
        "FERRY_RUNTIME_MODEL_FORMAT=aot-inductor",
        "FERRY_RUNTIME_FRONTEND_PROCESSES=2",
    )
    base = f"http://127.0.0.1:{http_port}"
    wait_ready(engine, container_name, base, 180)
    rows = [[1.0, 2.0, 3.0, 4.0], [-1.0, 0.5, 0.0, 2.0]]
    reply = httpx.post(
        f"{base}/v2/models/model/infer",
        json={
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [2, IN_FEATURES],
                    "data": [x for row in rows for x in row],
                }
            ]
        },
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    outputs = {output["name"]: output for output in reply.json()["outputs"]}
    scores, total = eager(torch.tensor(rows))
    assert torch.allclose(torch.tensor(outputs["scores"]["data"]).reshape(2, 3), scores, atol=1e-5)
    assert torch.allclose(torch.tensor(outputs["total"]["data"]).reshape(2, 1), total, atol=1e-5)
    logs = docker(engine, "logs", container_name, check=False)
    assert "(aot-inductor)" in logs.stdout + logs.stderr
    assert "(2 front-end processes)" in logs.stdout + logs.stderr
    docker(engine, "stop", "--time", "30", container_name, timeout=60)
    state = json.loads(docker(engine, "inspect", container_name).stdout)[0]["State"]
    assert state["ExitCode"] == 0


def test_a_format_that_does_not_match_exits_with_the_load_failure_status(
    engine: dict[str, str],
    image: str,
    pt2_dirs: dict[str, Path],
    tmp_path: Path,
    container_name: str,
) -> None:
    models = tmp_path / "models"
    shutil.copytree(pt2_dirs["aot-inductor"], models)
    for path in (models, *models.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    run = docker(
        engine,
        "run",
        "--name",
        container_name,
        *POD_LIKE,
        "-v",
        f"{models}:/models:ro",
        "-e",
        "FERRY_RUNTIME_HTTP_PORT=0",
        "-e",
        "FERRY_RUNTIME_GRPC_PORT=0",
        "-e",
        "FERRY_RUNTIME_HOST=127.0.0.1",
        "-e",
        "FERRY_RUNTIME_MODEL_FORMAT=exported-program",
        image,
        check=False,
        timeout=180,
    )
    assert run.returncode == 3, run.stdout + run.stderr
    assert "is an AOTInductor package: set the format to aot-inductor" in run.stderr + run.stdout

"""``make demo``: Ferry's main job on one machine, no cluster needed.

1. Render the Kubernetes objects the operator makes for
   examples/modeldeployment-aot-inductor.yaml.
2. Package the example MLP with ``ferry-runtime package``: torch.export with a dynamic batch
   dimension, AOTInductor compilation, a check against eager, model.pt2 + model.json. This is
   PyTorch 2's deployment path: no deprecated API (no torch.jit), no warning filter here.
3. Start ``ferry-runtime serve`` on 127.0.0.1 with the runtime settings the operator rendered
   for the pod (model name, format, batching, threads), on free local ports.
4. Infer with tritonclient over HTTP (JSON and binary tensors) and gRPC, and over the simple
   JSON route, and print the results.
5. Send SIGTERM and show that the server drained and exited cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "modeldeployment-aot-inductor.yaml"
FACTORY = f"{ROOT / 'examples' / 'make_example_model.py'}:build_mlp"
# Every child process shows DeprecationWarnings (Python hides most by default); the demo fails
# if one appears, so "no deprecated API" is checked, not assumed.
SHOW_DEPRECATIONS = {"PYTHONWARNINGS": "default::DeprecationWarning"}
BIN = Path(sys.executable).parent
RUNTIME_PREFIX = "FERRY_RUNTIME_"
LOCAL_ONLY = {"MODEL_DIR", "HOST", "HTTP_PORT", "GRPC_PORT", "MODEL_SHA256", "LOG_LEVEL"}


def step(title: str) -> None:
    bold, plain = ("\033[1m", "\033[0m") if sys.stdout.isatty() else ("", "")
    print(f"\n{bold}== {title}{plain}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def render_example() -> dict[str, str]:
    """Print the operator's manifests; return the runtime env it gives the model server."""
    step(f"1. ferry-operator render {EXAMPLE.relative_to(ROOT)}")
    command = [str(BIN / "ferry-operator"), "render", str(EXAMPLE)]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        print(f"(skipped: the operator could not render: {error})")
        return {}
    if result.returncode != 0:
        print(f"(skipped: ferry-operator render failed: {result.stderr.strip()[-500:]})")
        return {}
    print(result.stdout.rstrip())
    documents = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    print("\nrendered: " + ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in documents))
    for document in documents:
        if document.get("kind") != "Deployment":
            continue
        for container in document["spec"]["template"]["spec"]["containers"]:
            return {
                item["name"]: str(item["value"])
                for item in container.get("env", [])
                if item["name"].startswith(RUNTIME_PREFIX) and "value" in item
            }
    return {}


def make_model(directory: Path) -> str:
    step("2. ferry-runtime package (torch.export + AOTInductor)")
    command = [
        str(BIN / "ferry-runtime"),
        "package",
        FACTORY,
        "--input",
        "INPUT__0:FP32:-1,64",
        "--output",
        "OUTPUT__0",
        "--format",
        "aot-inductor",
        "--out",
        str(directory),
    ]
    print("  " + " ".join(command[1:]).replace(str(ROOT) + "/", ""))
    started = time.monotonic()
    result = subprocess.run(
        command, capture_output=True, text=True, check=False, env=os.environ | SHOW_DEPRECATIONS
    )
    refuse_deprecations("ferry-runtime package", result.stderr)
    if result.returncode != 0:
        sys.exit(f"ferry-runtime package failed:\n{result.stderr}")
    digest = result.stdout.strip()
    for path in sorted(directory.iterdir()):
        print(f"  {path}  ({path.stat().st_size} bytes)")
    print(f"  packaged in {time.monotonic() - started:.1f}s; sha256(model.pt2) = {digest}")
    return digest


def refuse_deprecations(what: str, output: str) -> None:
    """Fail the demo when a process printed a DeprecationWarning."""
    lines = [line for line in output.splitlines() if "DeprecationWarning" in line]
    if lines:
        sys.exit(f"{what} printed a DeprecationWarning:\n" + "\n".join(lines))


def start_server(
    model_dir: Path, digest: str, rendered: dict[str, str], log: Path
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    step("3. ferry-runtime serve")
    http_port, grpc_port = free_port(), free_port()
    settings = {
        name: value
        for name, value in rendered.items()
        if name.removeprefix(RUNTIME_PREFIX) not in LOCAL_ONLY
    }
    settings |= {
        "FERRY_RUNTIME_MODEL_DIR": str(model_dir),
        "FERRY_RUNTIME_MODEL_SHA256": digest,
        "FERRY_RUNTIME_HOST": "127.0.0.1",
        "FERRY_RUNTIME_HTTP_PORT": str(http_port),
        "FERRY_RUNTIME_GRPC_PORT": str(grpc_port),
    }
    for name, value in sorted(settings.items()):
        print(f"  {name}={value}")
    env = (
        {k: v for k, v in os.environ.items() if not k.startswith(RUNTIME_PREFIX)}
        | settings
        | SHOW_DEPRECATIONS
    )
    handle = log.open("wb")
    process = subprocess.Popen(
        [str(BIN / "ferry-runtime"), "serve"], env=env, stdout=handle, stderr=subprocess.STDOUT
    )
    handle.close()
    base = f"http://127.0.0.1:{http_port}"
    started = time.monotonic()
    while True:
        if process.poll() is not None:
            sys.exit(f"ferry-runtime exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{base}/v2/health/ready", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() - started > 120:
            process.kill()
            sys.exit(f"ferry-runtime did not become ready:\n{log.read_text()}")
        time.sleep(0.1)
    print(f"ready after {time.monotonic() - started:.1f}s: REST {base}, gRPC 127.0.0.1:{grpc_port}")
    return process, {
        "http": f"127.0.0.1:{http_port}",
        "grpc": f"127.0.0.1:{grpc_port}",
        "base": base,
        "model": settings.get("FERRY_RUNTIME_MODEL_NAME", "model"),
    }


def show(label: str, scores: np.ndarray) -> None:
    for row, values in enumerate(scores):
        top = int(np.argmax(values))
        shown = " ".join(f"{value:+.3f}" for value in values[:4])
        print(f"  {label:<12} row {row}: class {top}  scores [{shown} ...]")


def infer_everywhere(where: dict[str, Any]) -> None:
    step("4. inference")
    model = where["model"]
    rows = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)

    http = httpclient.InferenceServerClient(where["http"])
    metadata = http.get_model_metadata(model)
    print(f"  model metadata: inputs {metadata['inputs']}, outputs {metadata['outputs']}")
    results = {}
    for label, binary in (("HTTP JSON", False), ("HTTP binary", True)):
        tensor = httpclient.InferInput("INPUT__0", list(rows.shape), "FP32")
        tensor.set_data_from_numpy(rows, binary_data=binary)
        requested = httpclient.InferRequestedOutput("OUTPUT__0", binary_data=binary)
        results[label] = http.infer(model, [tensor], outputs=[requested]).as_numpy("OUTPUT__0")

    grpc = grpcclient.InferenceServerClient(where["grpc"])
    tensor = grpcclient.InferInput("INPUT__0", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    results["gRPC"] = grpc.infer(model, [tensor]).as_numpy("OUTPUT__0")

    reply = httpx.post(
        f"{where['base']}/v1/models/{model}:predict", json={"instances": rows.tolist()}
    )
    reply.raise_for_status()
    results["JSON predict"] = np.array(reply.json()["predictions"], dtype=np.float32)

    for label, scores in results.items():
        show(label, scores)
    reference = results["gRPC"]
    agree = all(np.allclose(scores, reference, rtol=1e-5, atol=1e-6) for scores in results.values())
    print(f"  all four routes agree: {agree}")
    if not agree:
        sys.exit("the routes disagree")
    stats = http.get_inference_statistics(model)["model_stats"][0]
    print(
        f"  server statistics: {stats['inference_count']} rows in "
        f"{stats['execution_count']} forward passes"
    )


def stop(process: subprocess.Popen[bytes], log: Path) -> None:
    step("5. SIGTERM")
    process.send_signal(signal.SIGTERM)
    try:
        status = process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        sys.exit("ferry-runtime did not stop within 60s")
    for line in log.read_text().splitlines()[-4:]:
        print(f"  {line}")
    print(f"  exit status: {status}")
    refuse_deprecations("ferry-runtime serve", log.read_text())
    print("  no DeprecationWarning from packaging or serving")
    if status != 0:
        sys.exit(f"ferry-runtime exited with {status}")


def main() -> None:
    rendered = render_example()
    with tempfile.TemporaryDirectory(prefix="ferry-demo-") as temp:
        model_dir = Path(temp) / "model"
        digest = make_model(model_dir)
        log = Path(temp) / "ferry-runtime.log"
        process, where = start_server(model_dir, digest, rendered, log)
        try:
            infer_everywhere(where)
        finally:
            if process.poll() is None:
                stop(process, log)
    print("\ndemo finished")


if __name__ == "__main__":
    main()

"""Launchers for the servers under test: Ferry's runtime, MLServer, TorchServe, Triton and KServe.

Each launcher writes the server's configuration, starts it pinned to the server CPUs, waits until
every model is ready, and returns a :class:`Server` that says how to reach each model over each
protocol and lists every knob it set (they go into the results).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from bench.runtime.models import INPUT_NAME, OUTPUT_NAME, ModelSpec
from bench.runtime.payloads import GRPC_SERVICE
from bench.runtime.procs import ManagedProcess, free_port, http_ok, pinned

REPO = Path(__file__).resolve().parents[2]
TORCHSERVE_OIP_SERVICE = "org.pytorch.serve.grpc.openinference.GRPCInferenceService"
"""TorchServe's Open Inference Protocol gRPC service (on with TS_OPEN_INFERENCE_PROTOCOL=oip)."""
PEERS_DIR = REPO / "bench" / "peers"
TRITON_ACCESS_HEADERS = ("triton-access-token", "triton-grpc-protocol-triton-access-token")
"""Headers carrying PyTriton's access token (HTTP; gRPC metadata) for its restricted endpoints."""


@dataclass(frozen=True)
class BatchConfig:
    """Dynamic batching settings shared by every server under test."""

    enabled: bool
    max_batch_size: int = 32
    max_delay_ms: float = 5.0

    @property
    def label(self) -> str:
        """Short label used in tables: ``off`` or ``b32/5ms``."""
        if not self.enabled:
            return "off"
        return f"b{self.max_batch_size}/{self.max_delay_ms:g}ms"


@dataclass(frozen=True)
class Endpoint:
    """How to reach one model over one protocol."""

    protocol: str
    port: int
    target: str
    """gRPC method path or HTTP path."""
    grpc_raw: bool = True
    """gRPC only: send the tensor in ``raw_input_contents`` (else ``contents.fp32_contents``)."""


@dataclass
class Server:
    """A started server with its endpoints per model and protocol."""

    name: str
    batch: BatchConfig
    process: ManagedProcess
    endpoints: dict[str, dict[str, Endpoint]]
    """model name -> protocol -> endpoint."""
    knobs: dict[str, object]
    startup_s: float = 0.0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def series(self) -> str:
        """``server batch-label``, the key of a line in tables and plots."""
        return f"{self.name} {self.batch.label}"

    def stop(self) -> None:
        """Stop the server and its children."""
        self.process.stop()


def _base_env(threads: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "MLSERVER_"))}
    # every server gets the same intra-op budget; OpenMP/MKL pools follow torch's setting
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    return env


def _grpc_endpoint(port: int, service: str = GRPC_SERVICE, raw: bool = True) -> Endpoint:
    return Endpoint("grpc", port, f"/{service}/ModelInfer", grpc_raw=raw)


def _oip_endpoints(model_name: str, http_port: int, grpc_port: int) -> dict[str, Endpoint]:
    """Where an Open Inference Protocol server takes ``model_name``'s requests."""
    return {
        "grpc": _grpc_endpoint(grpc_port),
        "http": Endpoint("http", http_port, f"/v2/models/{model_name}/infer"),
    }


# --------------------------------------------------------------------------- Ferry


def start_ferry(
    model: ModelSpec,
    model_dir: Path,
    batch: BatchConfig,
    *,
    cpus: list[int],
    threads: int,
    logs: Path,
) -> Server:
    """``ferry-runtime serve`` for one model directory, configured by FERRY_RUNTIME_* env."""
    http_port, grpc_port = free_port(), free_port()
    settings = {
        "FERRY_RUNTIME_MODEL_DIR": str(model_dir),
        "FERRY_RUNTIME_MODEL_NAME": model.name,
        "FERRY_RUNTIME_DEVICE": "cpu",
        "FERRY_RUNTIME_THREADS": str(threads),
        "FERRY_RUNTIME_HOST": "127.0.0.1",
        "FERRY_RUNTIME_HTTP_PORT": str(http_port),
        "FERRY_RUNTIME_GRPC_PORT": str(grpc_port),
        "FERRY_RUNTIME_BATCHING_ENABLED": "true" if batch.enabled else "false",
        "FERRY_RUNTIME_MAX_BATCH_SIZE": str(batch.max_batch_size),
        "FERRY_RUNTIME_MAX_QUEUE_DELAY_MS": f"{batch.max_delay_ms:g}",
        "FERRY_RUNTIME_LOG_LEVEL": "warning",
    }
    env = _base_env(threads) | settings
    exe = REPO / ".venv" / "bin" / "ferry-runtime"
    process = ManagedProcess(
        pinned([str(exe), "serve"], cpus),
        env,
        logs / f"ferry-{model.name}-{batch.label.replace('/', '-')}.log",
    )
    server = Server(
        name="ferry",
        batch=batch,
        process=process,
        endpoints={model.name: _oip_endpoints(model.name, http_port, grpc_port)},
        knobs={
            "env": {k: v for k, v in settings.items() if "PORT" not in k and "DIR" not in k},
            "processes": "1 (uvicorn REST on asyncio + thread-pool gRPC, one forward thread)",
        },
    )
    try:
        server.startup_s = process.wait_ready(
            lambda: http_ok(f"http://127.0.0.1:{http_port}/v2/health/ready"), 120, "ferry-runtime"
        )
    except BaseException:
        process.stop()
        raise
    return server


def ferry_available() -> str | None:
    """None when the ``ferry-runtime`` entry point is installed in .venv, else why not."""
    exe = REPO / ".venv" / "bin" / "ferry-runtime"
    if not exe.exists():
        return f"{exe} not found (pip install -e '.[runtime]')"
    return None


def start_grpc_floor(
    model: ModelSpec, reply: bytes, *, cpus: list[int], workdir: Path, logs: Path
) -> Server:
    """The grpc.aio floor (``bench.runtime.floor``) answering ``model``'s requests."""
    port = free_port()
    reply_file = workdir / "grpc-floor-reply.bin"
    reply_file.parent.mkdir(parents=True, exist_ok=True)
    reply_file.write_bytes(reply)
    process = ManagedProcess(
        pinned(
            [
                str(REPO / ".venv" / "bin" / "python"),
                "-m",
                "bench.runtime.floor",
                "--port",
                str(port),
                "--reply",
                str(reply_file),
            ],
            cpus,
        ),
        _base_env(1),
        logs / "grpc-floor.log",
        cwd=REPO,
    )
    server = Server(
        name="grpc.aio-floor",
        batch=BatchConfig(enabled=False),
        process=process,
        endpoints={model.name: {"grpc": _grpc_endpoint(port)}},
        knobs={"what": "raw-bytes grpc.aio handler returning one prebuilt reply (no work)"},
    )

    def answers() -> bool:
        import socket

        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", port)) == 0

    try:
        server.startup_s = process.wait_ready(answers, 60, "grpc floor")
    except BaseException:
        process.stop()
        raise
    return server


# --------------------------------------------------------------------------- MLServer


def start_mlserver(
    models: dict[str, tuple[ModelSpec, Path]],
    batch: BatchConfig,
    *,
    cpus: list[int],
    threads: int,
    python: Path,
    workdir: Path,
    logs: Path,
    parallel_workers: int,
) -> Server:
    """One MLServer serving every model through the custom TorchScript runtime."""
    root = workdir / f"mlserver-{batch.label.replace('/', '-')}"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    server_settings = {
        "debug": False,
        "parallel_workers": parallel_workers,
        "host": "127.0.0.1",
        "http_port": http_port,
        "grpc_port": grpc_port,
        "metrics_port": metrics_port,
        "load_models_at_startup": True,
    }
    (root / "settings.json").write_text(json.dumps(server_settings, indent=2))
    model_knobs: dict[str, object] = {}
    for name, (spec, model_dir) in models.items():
        target = root / name
        target.mkdir()
        shutil.copy2(model_dir / "model.pt", target / "model.pt")
        model_settings: dict[str, object] = {
            "name": name,
            "implementation": "mlserver_runtime.TorchScriptModel",
            "parameters": {"uri": "./model.pt", "extra": {"torch_threads": threads}},
            "inputs": [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, spec.input_width]}],
            "outputs": [
                {"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, spec.output_width]}
            ],
        }
        if batch.enabled:
            model_settings["max_batch_size"] = batch.max_batch_size
            model_settings["max_batch_time"] = batch.max_delay_ms / 1000.0
        (target / "model-settings.json").write_text(json.dumps(model_settings, indent=2))
        model_knobs = {
            k: model_settings[k]
            for k in ("max_batch_size", "max_batch_time")
            if k in model_settings
        }
    env = _base_env(threads)
    env["PYTHONPATH"] = str(PEERS_DIR)
    exe = python.parent / "mlserver"
    process = ManagedProcess(
        pinned([str(exe), "start", str(root)], cpus),
        env,
        logs / f"mlserver-{batch.label.replace('/', '-')}.log",
        cwd=root,
    )
    endpoints = {name: _oip_endpoints(name, http_port, grpc_port) for name in models}
    server = Server(
        name="mlserver",
        batch=batch,
        process=process,
        endpoints=endpoints,
        knobs={
            "settings.json": {
                k: v for k, v in server_settings.items() if not k.endswith("port") and k != "host"
            },
            "model-settings.json": model_knobs,
            "runtime": "bench/peers/mlserver_runtime.py (torch.jit.load, NumpyCodec, "
            f"torch.set_num_threads({threads}))",
        },
    )

    def all_ready() -> bool:
        return all(
            http_ok(f"http://127.0.0.1:{http_port}/v2/models/{name}/ready") for name in models
        )

    try:
        server.startup_s = process.wait_ready(all_ready, 180, "mlserver")
    except BaseException:
        process.stop()
        raise
    return server


# --------------------------------------------------------------------------- TorchServe


def build_mar(spec: ModelSpec, model_dir: Path, python: Path, store: Path, logs: Path) -> Path:
    """Package ``model_dir`` with the custom handler into ``store/<name>.mar``."""
    store.mkdir(parents=True, exist_ok=True)
    mar = store / f"{spec.name}.mar"
    archiver = python.parent / "torch-model-archiver"
    cmd = [
        str(archiver),
        "--model-name",
        spec.name,
        "--version",
        "1.0",
        "--serialized-file",
        str(model_dir / "model.pt"),
        "--handler",
        str(PEERS_DIR / "torchserve_handler.py"),
        "--extra-files",
        str(model_dir / "model.json"),
        "--export-path",
        str(store),
        "--force",
    ]
    with (logs / "torch-model-archiver.log").open("a") as out:
        subprocess.run(cmd, check=True, stdout=out, stderr=subprocess.STDOUT, timeout=300)
    return mar


def start_torchserve(
    models: dict[str, tuple[ModelSpec, Path]],
    batch: BatchConfig,
    *,
    cpus: list[int],
    threads: int,
    python: Path,
    workdir: Path,
    logs: Path,
) -> Server:
    """One TorchServe serving every model (one worker each) through the custom OIP handler."""
    label = batch.label.replace("/", "-")
    root = workdir / f"torchserve-{label}"
    shutil.rmtree(root, ignore_errors=True)
    store = root / "model-store"
    for name, (spec, model_dir) in models.items():
        del name
        build_mar(spec, model_dir, python=python, store=store, logs=logs)
    ports = {k: free_port() for k in ("inference", "management", "metrics", "grpc", "grpc_mgmt")}
    batch_size = batch.max_batch_size if batch.enabled else 1
    max_delay = round(batch.max_delay_ms) if batch.enabled else 1
    model_cfg = {
        name: {
            "1.0": {
                "defaultVersion": True,
                "marName": f"{name}.mar",
                "minWorkers": 1,
                "maxWorkers": 1,
                "batchSize": batch_size,
                "maxBatchDelay": max_delay,
                "responseTimeout": 120,
            }
        }
        for name in models
    }
    properties = {
        "inference_address": f"http://127.0.0.1:{ports['inference']}",
        "management_address": f"http://127.0.0.1:{ports['management']}",
        "metrics_address": f"http://127.0.0.1:{ports['metrics']}",
        "grpc_inference_address": "127.0.0.1",
        "grpc_management_address": "127.0.0.1",
        "grpc_inference_port": str(ports["grpc"]),
        "grpc_management_port": str(ports["grpc_mgmt"]),
        "model_store": str(store),
        "load_models": ",".join(f"{n}.mar" for n in models),
        "models": json.dumps(model_cfg),
        "default_workers_per_model": "1",
        "job_queue_size": "1000",
        "async_logging": "true",
        "metrics_mode": "prometheus",
        "vmargs": f"-Dlog4j.configurationFile=file://{PEERS_DIR / 'torchserve-log4j2.xml'}",
        "disable_system_metrics": "true",
        "disable_token_authorization": "true",
        "enable_envvars_config": "false",
    }
    config = root / "config.properties"
    config.write_text("".join(f"{k}={v}\n" for k, v in properties.items()))
    env = _base_env(threads)
    env["LOG_LOCATION"] = str(root / "logs")
    env["METRICS_LOCATION"] = str(root / "logs")
    env["FERRY_BENCH_TORCH_THREADS"] = str(threads)
    env["TS_OPEN_INFERENCE_PROTOCOL"] = "oip"
    exe = python.parent / "torchserve"
    process = ManagedProcess(
        pinned(
            [
                str(exe),
                "--start",
                "--foreground",
                "--ncs",
                "--ts-config",
                str(config),
                "--model-store",
                str(store),
                "--disable-token-auth",
            ],
            cpus,
        ),
        env,
        logs / f"torchserve-{label}.log",
        cwd=root,
    )
    endpoints = {
        name: {
            # TorchServe's OIP gRPC service has its own proto package and reads only the typed
            # ``contents`` fields, not ``raw_input_contents``.
            "grpc": _grpc_endpoint(ports["grpc"], TORCHSERVE_OIP_SERVICE, raw=False),
            "http": Endpoint("http", ports["inference"], f"/v2/models/{name}/infer"),
        }
        for name in models
    }
    shown = {
        k: v
        for k, v in properties.items()
        if not k.endswith(("address", "port")) and k not in {"model_store", "models", "vmargs"}
    }
    server = Server(
        name="torchserve",
        batch=batch,
        process=process,
        endpoints=endpoints,
        knobs={
            "config.properties": shown,
            "per model": {
                "minWorkers": 1,
                "maxWorkers": 1,
                "batchSize": batch_size,
                "maxBatchDelay": max_delay,
            },
            "env": {"TS_OPEN_INFERENCE_PROTOCOL": "oip"},
            "logging": "bench/peers/torchserve-log4j2.xml (no per-request access/metric log lines)",
            "handler": "bench/peers/torchserve_handler.py (KServe v2 JSON per request, "
            f"torch.jit.load, torch.set_num_threads({threads}))",
        },
    )

    def all_ready() -> bool:
        def has_ready_worker(body: bytes) -> bool:
            described = json.loads(body)
            workers = described[0].get("workers", []) if described else []
            return any(w.get("status") == "READY" for w in workers)

        return all(
            http_ok(
                f"http://127.0.0.1:{ports['management']}/models/{name}",
                predicate=has_ready_worker,
            )
            for name in models
        )

    try:
        server.startup_s = process.wait_ready(all_ready, 240, "torchserve")
    except BaseException:
        process.stop()
        raise
    return server


# --------------------------------------------------------------------------- Triton (PyTriton)


def start_pytriton(
    model: ModelSpec,
    model_dir: Path,
    batch: BatchConfig,
    *,
    cpus: list[int],
    threads: int,
    python: Path,
    logs: Path,
) -> Server:
    """NVIDIA Triton (C++ front ends + dynamic batcher) with the model bound through PyTriton."""
    label = batch.label.replace("/", "-")
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    access_token = secrets.token_urlsafe(16)
    knobs = {
        "--max-batch-size": batch.max_batch_size if batch.enabled else 0,
        "--max-queue-delay-us": round(batch.max_delay_ms * 1000),
        "--threads": threads,
    }
    cmd = [
        str(python),
        str(PEERS_DIR / "pytriton_server.py"),
        "--model-file",
        str(model_dir / "model.pt"),
        "--model-name",
        model.name,
        "--input-width",
        str(model.input_width),
        "--output-width",
        str(model.output_width),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        "--metrics-port",
        str(metrics_port),
        "--access-token",
        access_token,
        *(str(part) for item in knobs.items() for part in item),
    ]
    process = ManagedProcess(pinned(cmd, cpus), _base_env(threads), logs / f"pytriton-{label}.log")
    server = Server(
        name="triton",
        batch=batch,
        process=process,
        endpoints={model.name: _oip_endpoints(model.name, http_port, grpc_port)},
        knobs={
            "launcher": "bench/peers/pytriton_server.py",
            "args": knobs,
            "ModelConfig": "max_batch_size, DynamicBatcher(max_queue_delay_microseconds), "
            "batching=True; strict=False",
            "TritonConfig": "allow_metrics=False, log_verbose=0, default Triton thread counts",
            "TritonSecurityConfig": "PyTriton's default restricted endpoints (not inference); "
            "perf_analyzer sends the access token",
            "processes": "tritonserver (C++ HTTP/gRPC front ends, dynamic batcher) + "
            "one PyTriton Python proxy running the forward pass",
        },
        extra={"headers": dict.fromkeys(TRITON_ACCESS_HEADERS, access_token)},
    )
    try:
        server.startup_s = process.wait_ready(
            lambda: http_ok(f"http://127.0.0.1:{http_port}/v2/models/{model.name}/ready"),
            240,
            "pytriton",
        )
    except BaseException:
        process.stop()
        raise
    return server


# --------------------------------------------------------------------------- KServe


def start_kserve(
    model: ModelSpec,
    model_dir: Path,
    batch: BatchConfig,
    *,
    cpus: list[int],
    threads: int,
    python: Path,
    logs: Path,
) -> Server:
    """KServe's Python model server (``kserve.ModelServer``, one worker); it has no batcher."""
    http_port, grpc_port = free_port(), free_port()
    knobs = {"--workers": 1, "--threads": threads}
    cmd = [
        str(python),
        str(PEERS_DIR / "kserve_server.py"),
        "--model-file",
        str(model_dir / "model.pt"),
        "--model-name",
        model.name,
        "--input-width",
        str(model.input_width),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
        *(str(part) for item in knobs.items() for part in item),
    ]
    process = ManagedProcess(pinned(cmd, cpus), _base_env(threads), logs / "kserve.log")
    server = Server(
        name="kserve",
        batch=batch,
        process=process,
        endpoints={model.name: _oip_endpoints(model.name, http_port, grpc_port)},
        knobs={
            "launcher": "bench/peers/kserve_server.py",
            "args": knobs,
            "ModelServer": "enable_grpc=True, enable_docs_url=False, "
            "enable_latency_logging=False, access_log_format=None",
            "batching": "none (KServe's Python server has no dynamic batcher)",
        },
    )
    try:
        server.startup_s = process.wait_ready(
            lambda: http_ok(f"http://127.0.0.1:{http_port}/v2/models/{model.name}/ready"),
            180,
            "kserve",
        )
    except BaseException:
        process.stop()
        raise
    return server

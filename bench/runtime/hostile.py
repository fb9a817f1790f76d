"""Ferry's runtime under hostile input and overload (issue 10); see docs/reliability.md.

    .venv/bin/python bench/runtime/hostile.py [--quick] [--out bench/results/hostile]

Every measurement runs a real ``ferry-runtime serve`` process (pinned to the last CPU, the
load generator to the others) and reads its resident memory from /proc:

memory
    one request at a time against a fresh server: the peak growth of the server's RSS over its
    idle RSS, against the request body's size, for the largest bodies each route accepts and
    for bodies it refuses; meanwhile a client polls ``/v2/health/live`` every few ms and the
    slowest answer during the request is recorded.
overload
    a slow model (queue 8, batch 4): accepted throughput with just enough closed-loop clients
    to keep it busy (12), then with 10x as many clients that send again as soon as they are
    answered, refused or not; accepted p99 against the queue-implied latency
    ((queue + 2 batches) / saturated throughput), responses by status, RSS before and after.

Prints a table and writes ``OUT.json`` and ``OUT.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import socket
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import grpc
import numpy as np
import orjson
import torch
from tritonclient.grpc import service_pb2

from bench.runtime.http1 import Connection, build_request
from bench.runtime.procs import ManagedProcess, free_port, http_ok, pinned

REPO = Path(__file__).resolve().parents[2]
RESULTS = REPO / "bench" / "results"
MIB = 1024 * 1024


# ---- models ----------------------------------------------------------------------------------


class Affine(torch.nn.Module):
    """``2x + 1``: output as large as the input, so a big request has a big response too."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0 + 1.0


class SlowMlp(torch.nn.Module):
    """A CPU-bound MLP: a batch of 4 takes ~10-20 ms on one core."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.layers = torch.nn.Sequential(
            torch.nn.Linear(64, 2048),
            torch.nn.ReLU(),
            *(
                module
                for _ in range(5)
                for module in (torch.nn.Linear(2048, 2048), torch.nn.ReLU())
            ),
            torch.nn.Linear(2048, 64),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


def write_model(directory: Path, module: torch.nn.Module, row_shape: list[int]) -> Path:
    """A TorchScript model directory (``model.pt`` + ``model.json``)."""
    import warnings

    directory.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(module.eval()), str(directory / "model.pt"))
    config = {
        "inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": row_shape}],
        "outputs": [{"name": "OUTPUT__0", "datatype": "FP32", "shape": row_shape}],
    }
    (directory / "model.json").write_text(json.dumps(config))
    return directory


# ---- the server under test -------------------------------------------------------------------


@dataclass
class Served:
    process: ManagedProcess
    http_port: int
    grpc_port: int

    def rss(self) -> int:
        """Resident bytes of the server process (from /proc, cheap enough to sample often)."""
        with open(f"/proc/{self.process.pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@contextlib.contextmanager
def serve(model_dir: Path, cpus: list[int], logs: Path, **settings: Any) -> Iterator[Served]:
    http_port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRY_")}
    env.update({"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"})
    env.update(
        {
            "FERRY_RUNTIME_MODEL_DIR": str(model_dir),
            "FERRY_RUNTIME_DEVICE": "cpu",
            "FERRY_RUNTIME_THREADS": "1",
            "FERRY_RUNTIME_HOST": "127.0.0.1",
            "FERRY_RUNTIME_HTTP_PORT": str(http_port),
            "FERRY_RUNTIME_GRPC_PORT": str(grpc_port),
            "FERRY_RUNTIME_LOG_LEVEL": "warning",
        }
    )
    env.update({f"FERRY_RUNTIME_{key.upper()}": str(value) for key, value in settings.items()})
    exe = REPO / ".venv" / "bin" / "ferry-runtime"
    process = ManagedProcess(pinned([str(exe), "serve"], cpus), env, logs / "ferry.log")
    try:
        process.wait_ready(
            lambda: http_ok(f"http://127.0.0.1:{http_port}/v2/health/ready"), 120, "ferry"
        )
        time.sleep(0.5)
        yield Served(process, http_port, grpc_port)
    finally:
        process.stop()


# ---- memory and liveness per request ---------------------------------------------------------


@dataclass
class MemoryCase:
    name: str
    route: str
    body_bytes: int
    status: int = 0
    rss_idle_mib: float = 0.0
    rss_growth_mib: float = 0.0
    growth_per_body: float = 0.0
    request_s: float = 0.0
    live_max_ms: float = 0.0
    live_probes: int = 0


class Sampler(threading.Thread):
    """Samples the server's RSS every millisecond until stopped; keeps the peak."""

    def __init__(self, served: Served) -> None:
        super().__init__(daemon=True)
        self.served, self.peak, self.done = served, 0, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.served.rss())
            time.sleep(0.001)


class Prober(threading.Thread):
    """GETs ``/v2/health/live`` every 5 ms on one keep-alive connection; keeps the latencies."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.done = port, threading.Event()
        self.latencies: list[tuple[float, float]] = []

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while not self.done.is_set():
            begun = time.perf_counter()
            connection.request("GET", "/v2/health/live")
            response = connection.getresponse()
            response.read()
            assert response.status == 200, response.status
            self.latencies.append((begun, time.perf_counter() - begun))
            time.sleep(0.005)
        connection.close()


def send_raw(port: int, path: str, body: bytes, headers: dict[str, str]) -> int:
    """POST ``body`` whole (as a hostile client would, even when refused early); the status."""
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=120) as sock:
        sender = threading.Thread(target=_send_all, args=(sock, head.encode() + body))
        sender.start()
        reply = b""
        while b"\r\n" not in reply:
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
        sender.join()
    return int(reply.split(b" ", 2)[1])


def _send_all(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):
        sock.sendall(data)


def json_body(elements: int) -> bytes:
    data = np.random.default_rng(0).random(elements, dtype=np.float32)
    tensor = {"name": "INPUT__0", "datatype": "FP32", "shape": [1, elements], "data": data}
    return orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)


def binary_body(elements: int) -> tuple[bytes, dict[str, str]]:
    tensor = {
        "name": "INPUT__0",
        "datatype": "FP32",
        "shape": [1, elements],
        "parameters": {"binary_data_size": 4 * elements},
    }
    head = orjson.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}})
    data = np.random.default_rng(0).random(elements, dtype=np.float32).tobytes()
    return head + data, {"Inference-Header-Content-Length": str(len(head))}


def predict_body(elements: int) -> bytes:
    data = np.random.default_rng(0).random(elements, dtype=np.float32)
    return orjson.dumps({"instances": [data]}, option=orjson.OPT_SERIALIZE_NUMPY)


def json_elements_for(size: int) -> int:
    """Elements of a JSON tensor body of about ``size`` bytes."""
    per = len(json_body(10_000)) / 10_000
    return int(size / per)


def memory_cases(quick: bool) -> list[tuple[str, str, str, Any]]:
    """(name, model, route, body factory) for each measured request."""
    cases: list[tuple[str, str, str, Any]] = [
        ("binary 60 MiB (largest allowed)", "wide", "infer", lambda: binary_body(15 * MIB)),
        ("binary 16 MiB", "wide", "infer", lambda: binary_body(4 * MIB)),
        (
            "JSON 7.9 MiB (largest allowed)",
            "wide",
            "infer",
            lambda: json_body(json_elements_for(7.9 * MIB)),
        ),
        ("JSON 2 MiB", "wide", "infer", lambda: json_body(json_elements_for(2 * MIB))),
        (
            "predict JSON 7.9 MiB",
            "wide",
            "predict",
            lambda: predict_body(json_elements_for(7.9 * MIB)),
        ),
        (
            "refused: JSON 50 MB, [1,64] model",
            "fixed",
            "infer",
            lambda: json_body(json_elements_for(50e6)),
        ),
        (
            "refused: JSON 50 MB, variable shape",
            "wide",
            "infer",
            lambda: json_body(json_elements_for(50e6)),
        ),
        (
            "refused: predict 50 MB, [1,64] model",
            "fixed",
            "predict",
            lambda: predict_body(json_elements_for(50e6)),
        ),
        ("refused: binary 100 MiB", "wide", "infer", lambda: binary_body(25 * MIB)),
    ]
    return cases[:4] + cases[5:7] if quick else cases


def measure_memory(
    name: str, served: Served, route: str, body: bytes, headers: dict[str, str]
) -> MemoryCase:
    path = "/v2/models/model/infer" if route == "infer" else "/v1/models/model:predict"
    case = MemoryCase(name, route, len(body))
    idle = [served.rss() for _ in range(20) if not time.sleep(0.005)]
    case.rss_idle_mib = min(idle) / MIB
    sampler, prober = Sampler(served), Prober(served.http_port)
    sampler.start()
    prober.start()
    time.sleep(0.1)
    begun = time.perf_counter()
    case.status = send_raw(served.http_port, path, body, headers)
    ended = time.perf_counter()
    time.sleep(0.05)
    sampler.done.set()
    prober.done.set()
    sampler.join()
    prober.join()
    case.request_s = ended - begun
    during = [lat for start, lat in prober.latencies if start + lat >= begun and start <= ended]
    case.live_probes = len(during)
    case.live_max_ms = 1000 * max(during, default=0.0)
    case.rss_growth_mib = max(0, sampler.peak - min(idle)) / MIB
    case.growth_per_body = case.rss_growth_mib * MIB / len(body)
    return case


# ---- overload --------------------------------------------------------------------------------


@dataclass
class LoadResult:
    protocol: str
    clients: int
    seconds: float
    accepted_per_s: float = 0.0
    accepted_p50_ms: float = 0.0
    accepted_p99_ms: float = 0.0
    answers: dict[str, int] = field(default_factory=dict)
    rss_before_mib: float = 0.0
    rss_after_mib: float = 0.0
    server_accepted_mean_ms: float = 0.0
    """Mean queue + compute time of the accepted requests, from the server's own statistics
    (the clients' figures also hold the load generator's own delays under a flood)."""


def infer_row() -> np.ndarray:
    return np.random.default_rng(1).random((1, 64), dtype=np.float32)


async def http_load(port: int, clients: int, seconds: float) -> tuple[list[float], Counter[str]]:
    data = infer_row()
    tensor = {"name": "INPUT__0", "datatype": "FP32", "shape": [1, 64], "data": data}
    body = orjson.dumps({"inputs": [tensor]}, option=orjson.OPT_SERIALIZE_NUMPY)
    request = build_request("127.0.0.1", port, "/v2/models/model/infer", body, "application/json")
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        connection = Connection("127.0.0.1", port, request)
        while time.perf_counter() < deadline:
            begun = time.perf_counter()
            try:
                status, _ = await connection.post()
            except (OSError, asyncio.IncompleteReadError):
                answers["connection error"] += 1
                continue
            answers[str(status)] += 1
            if status == 200:
                latencies.append(time.perf_counter() - begun)
        await connection.close()

    await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, answers


async def grpc_load(port: int, clients: int, seconds: float) -> tuple[list[float], Counter[str]]:
    message = service_pb2.ModelInferRequest(model_name="model")
    message.inputs.add(name="INPUT__0", datatype="FP32", shape=[1, 64])
    message.raw_input_contents.append(infer_row().tobytes())
    payload = message.SerializeToString()
    latencies: list[float] = []
    answers: Counter[str] = Counter()
    deadline = time.perf_counter() + seconds
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer")

        async def worker() -> None:
            while time.perf_counter() < deadline:
                begun = time.perf_counter()
                try:
                    await call(payload, timeout=60)
                except grpc.aio.AioRpcError as error:
                    answers[error.code().name] += 1
                    continue
                answers["OK"] += 1
                latencies.append(time.perf_counter() - begun)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return latencies, answers


def success_stats(port: int) -> tuple[int, int]:
    """(count, total ns) of the successful inferences the server has counted so far."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/v2/models/model/stats")
    document = json.loads(connection.getresponse().read())
    connection.close()
    success = document["model_stats"][0]["inference_stats"]["success"]
    return int(success["count"]), int(success["ns"])


def run_load(served: Served, protocol: str, clients: int, seconds: float) -> LoadResult:
    result = LoadResult(protocol, clients, seconds)
    result.rss_before_mib = served.rss() / MIB
    load = http_load if protocol == "http" else grpc_load
    port = served.http_port if protocol == "http" else served.grpc_port
    asyncio.run(load(port, clients, 1.0))  # warm-up: connections, allocator, batcher estimate
    count0, ns0 = success_stats(served.http_port)
    latencies, answers = asyncio.run(load(port, clients, seconds))
    count1, ns1 = success_stats(served.http_port)
    result.server_accepted_mean_ms = (ns1 - ns0) / max(1, count1 - count0) / 1e6
    result.rss_after_mib = served.rss() / MIB
    result.answers = dict(answers)
    result.accepted_per_s = len(latencies) / seconds
    if latencies:
        result.accepted_p50_ms = 1000 * float(np.percentile(latencies, 50))
        result.accepted_p99_ms = 1000 * float(np.percentile(latencies, 99))
    return result


# ---- report ----------------------------------------------------------------------------------


def report(memory: list[MemoryCase], overload: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    lines = [
        f"Run {meta['when']} on {meta['machine']}; server pinned to CPU {meta['server_cpus']}, "
        f"load generator to {meta['loadgen_cpus']}.",
        "",
        "| request | status | body MiB | peak RSS growth MiB | growth / body | "
        "slowest /v2/health/live during it (ms) | probes | request s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in memory:
        lines.append(
            f"| {case.name} | {case.status} | {case.body_bytes / MIB:.1f} | "
            f"{case.rss_growth_mib:.1f} | {case.growth_per_body:.2f}x | {case.live_max_ms:.1f} | "
            f"{case.live_probes} | {case.request_s:.2f} |"
        )
    lines += [
        "",
        "| protocol | unloaded saturated req/s (12 clients) | 10x overload accepted req/s "
        "(120 clients) | ratio | accepted p50 / p99 ms (clients) | accepted mean ms (server) | "
        "queue-implied ms | p99 / implied | answers under overload | RSS before → after MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in overload:
        base, over = row["saturated"], row["overload"]
        answers = ", ".join(f"{k}: {v}" for k, v in sorted(over["answers"].items()))
        lines.append(
            f"| {row['protocol']} | {base['accepted_per_s']:.1f} | {over['accepted_per_s']:.1f} | "
            f"{row['goodput_ratio']:.2f} | {over['accepted_p50_ms']:.1f} / "
            f"{over['accepted_p99_ms']:.1f} | {over['server_accepted_mean_ms']:.1f} | "
            f"{row['implied_ms']:.1f} | {row['p99_over_implied']:.2f} | {answers} | "
            f"{over['rss_before_mib']:.0f} → {over['rss_after_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer cases, shorter load")
    parser.add_argument("--out", type=Path, default=RESULTS / "hostile")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--skip-overload", action="store_true")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="SETTING=VALUE",
        help="a runtime setting for every server, e.g. serving_thread_nice=0",
    )
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.set)
    cpus = sorted(os.sched_getaffinity(0))
    server_cpus, loadgen_cpus = cpus[-1:], cpus[:-1] or cpus
    os.sched_setaffinity(0, loadgen_cpus)
    seconds = 4.0 if args.quick else 8.0
    meta = {
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs",
        "server_cpus": server_cpus,
        "loadgen_cpus": loadgen_cpus,
        "load_seconds": seconds,
        "settings": extra,
    }
    memory: list[MemoryCase] = []
    overload: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ferry-hostile-") as tmp:
        root = Path(tmp)
        models = {
            "wide": write_model(root / "wide", Affine(), [-1]),
            "fixed": write_model(root / "fixed", Affine(), [64]),
            "slow": write_model(root / "slow", SlowMlp(), [64]),
        }
        if not args.skip_memory:
            for name, model, route, factory in memory_cases(args.quick):
                made = factory()
                body, headers = made if isinstance(made, tuple) else (made, {})
                if route == "infer" and not headers:
                    headers = {"Content-Type": "application/json"}
                with serve(
                    models[model], server_cpus, root / "logs", **({"max_batch_size": 32} | extra)
                ) as served:
                    case = measure_memory(name, served, route, body, headers)
                memory.append(case)
                print(
                    f"{name:40s} status {case.status} body {case.body_bytes / MIB:6.1f} MiB "
                    f"RSS +{case.rss_growth_mib:7.1f} MiB ({case.growth_per_body:.2f}x) "
                    f"live max {case.live_max_ms:6.1f} ms over {case.live_probes} probes",
                    flush=True,
                )
        if not args.skip_overload:
            batching = {"max_batch_size": 4, "max_queue_size": 8, "max_queue_delay_ms": 5} | extra
            for protocol in ("http", "grpc"):
                with serve(models["slow"], server_cpus, root / "logs", **batching) as served:
                    saturated = run_load(served, protocol, 12, seconds)
                    loaded = run_load(served, protocol, 120, seconds)
                implied = 1000 * (8 + 2 * 4) / max(saturated.accepted_per_s, 1e-9)
                row = {
                    "protocol": protocol,
                    "saturated": asdict(saturated),
                    "overload": asdict(loaded),
                    "goodput_ratio": loaded.accepted_per_s / max(saturated.accepted_per_s, 1e-9),
                    "implied_ms": implied,
                    "p99_over_implied": loaded.accepted_p99_ms / implied,
                }
                overload.append(row)
                print(
                    f"{protocol}: saturated {saturated.accepted_per_s:.1f}/s, 10x overload "
                    f"{loaded.accepted_per_s:.1f}/s (ratio {row['goodput_ratio']:.2f}), "
                    f"p50/p99 {loaded.accepted_p50_ms:.1f}/{loaded.accepted_p99_ms:.1f} ms "
                    f"(server mean {loaded.server_accepted_mean_ms:.1f} ms; saturated "
                    f"{saturated.server_accepted_mean_ms:.1f} ms) vs implied {implied:.1f} ms, "
                    f"answers {loaded.answers}, RSS {loaded.rss_before_mib:.0f} -> "
                    f"{loaded.rss_after_mib:.0f} MiB",
                    flush=True,
                )
    text = report(memory, overload, meta)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    document = {"meta": meta, "memory": [asdict(c) for c in memory], "overload": overload}
    args.out.with_suffix(".json").write_text(json.dumps(document, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

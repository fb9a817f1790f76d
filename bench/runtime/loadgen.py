"""Closed-loop OIP v2 load generator (gRPC via grpc.aio, REST via aiohttp), one process.

The parent (``bench.runtime.driver``) starts one or more of these, each pinned to the load
generator's CPUs, with a job file. Each process connects, checks one response against the
model's true output, warms up, prints ``READY``, waits for ``GO`` on stdin (so all processes
measure the same window), then runs ``concurrency`` closed-loop workers until the request count
or the duration bound is reached and prints one JSON result line.

Requests are pre-encoded bytes: gRPC uses a raw-bytes method on one grpc.aio channel (no
protobuf work per request), REST writes a prebuilt HTTP/1.1 request on one keep-alive
connection per worker (``bench.runtime.http1``). Only loopback targets are accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import ipaddress
import json
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from bench.runtime.http1 import Connection, build_request
from bench.runtime.payloads import decode_grpc_response, decode_http_response, outputs_match

Sender = Callable[[], Awaitable[bytes]]


@dataclass(frozen=True)
class Job:
    """What one load generator process does."""

    protocol: str
    """``grpc`` or ``http``."""
    host: str
    port: int
    target: str
    """gRPC: full method path (``/inference.GRPCInferenceService/ModelInfer``); HTTP: URL path."""
    body: bytes
    expected: list[float]
    concurrency: int
    warmup_requests: int
    warmup_s: float
    requests: int
    duration_s: float

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Job:
        """Build from the job file written by the driver."""
        fields = dict(doc)
        fields["body"] = base64.b64decode(doc["body"])
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        """The job file's content."""
        doc = dict(self.__dict__)
        doc["body"] = base64.b64encode(self.body).decode()
        return doc


def require_loopback(host: str) -> None:
    """Refuse any target that is not on this machine's loopback range."""
    if host == "localhost":
        return
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"load generator targets loopback only, not {host}")


class RequestFailedError(Exception):
    """A request that did not succeed (non-200, gRPC error)."""


async def _grpc_senders(job: Job) -> tuple[list[Sender], Callable[[], Awaitable[None]]]:
    """One shared channel (one HTTP/2 connection) for every worker."""
    import grpc

    channel = grpc.aio.insecure_channel(
        f"{job.host}:{job.port}",
        options=[
            ("grpc.max_send_message_length", -1),
            ("grpc.max_receive_message_length", -1),
        ],
    )
    call = channel.unary_unary(job.target)  # no (de)serializers: bytes in, bytes out
    body = job.body

    async def send() -> bytes:
        try:
            reply: bytes = await call(body)
        except grpc.aio.AioRpcError as exc:
            raise RequestFailedError(f"{exc.code().name}: {exc.details()}") from None
        return reply

    async def close() -> None:
        await channel.close()

    return [send] * job.concurrency, close


async def _http_senders(job: Job) -> tuple[list[Sender], Callable[[], Awaitable[None]]]:
    """One keep-alive connection per worker, like a pool of ``concurrency`` clients."""
    request = build_request(job.host, job.port, job.target, job.body, "application/json")
    connections = [Connection(job.host, job.port, request) for _ in range(job.concurrency)]

    def sender(connection: Connection) -> Sender:
        async def send() -> bytes:
            status, payload = await connection.post()
            if status != 200:
                raise RequestFailedError(f"HTTP {status}: {payload[:200]!r}")
            return payload

        return send

    async def close() -> None:
        for connection in connections:
            await connection.close()

    return [sender(c) for c in connections], close


@dataclass
class PhaseResult:
    """Outcome of one closed-loop phase."""

    latencies_ns: list[int]
    errors: int
    first_error: str | None
    started: float
    finished: float
    cpu_s: float


async def run_phase(
    senders: Sequence[Sender], max_requests: int, max_seconds: float
) -> PhaseResult:
    """Closed loop: one worker per sender, each sends, awaits, repeats; stop issuing once
    ``max_requests`` were issued or ``max_seconds`` passed, then let in-flight calls finish."""
    latencies: list[int] = []
    state = {"issued": 0, "errors": 0}
    first_error: list[str] = []
    perf_ns = time.perf_counter_ns
    deadline = time.perf_counter() + max_seconds

    async def worker(send: Sender) -> None:
        while state["issued"] < max_requests and time.perf_counter() < deadline:
            state["issued"] += 1
            t0 = perf_ns()
            try:
                await send()
            except Exception as exc:  # every failure is counted, the loop goes on
                state["errors"] += 1
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(perf_ns() - t0)

    cpu0 = time.process_time()
    started = time.time()
    await asyncio.gather(*(worker(send) for send in senders))
    finished = time.time()
    return PhaseResult(
        latencies_ns=latencies,
        errors=state["errors"],
        first_error=first_error[0] if first_error else None,
        started=started,
        finished=finished,
        cpu_s=time.process_time() - cpu0,
    )


async def _check_response(send: Sender, job: Job) -> str | None:
    """Send one request and compare its first output with the expected rows."""
    reply = await send()
    decode = decode_grpc_response if job.protocol == "grpc" else decode_http_response
    got = decode(reply)
    if not outputs_match(got, job.expected):
        return f"wrong output: got {got[:4]}... expected {job.expected[:4]}..."
    return None


async def run_job(job: Job, wait_for_go: Callable[[], Coroutine[Any, Any, None]]) -> dict[str, Any]:
    """Connect, validate, warm up, wait for GO, measure; return the result document."""
    require_loopback(job.host)
    make = _grpc_senders if job.protocol == "grpc" else _http_senders
    senders, close = await make(job)
    try:
        validation_error = await _check_response(senders[0], job)
        await run_phase(senders, job.warmup_requests, job.warmup_s)
        await wait_for_go()
        # no collector pauses in the client while it measures (the phase is bounded)
        gc.collect()
        gc.disable()
        try:
            result = await run_phase(senders, job.requests, job.duration_s)
        finally:
            gc.enable()
    finally:
        await close()
    return {
        "latencies_ns": result.latencies_ns,
        "errors": result.errors,
        "first_error": result.first_error,
        "validation_error": validation_error,
        "started": result.started,
        "finished": result.finished,
        "cpu_s": result.cpu_s,
    }


async def _stdin_go() -> None:
    print("READY", flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "GO":
        raise SystemExit(f"expected GO on stdin, got {line!r}")


def main() -> int:
    """CLI entry point: ``python -m bench.runtime.loadgen JOB.json``."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("job", help="job file written by the driver")
    args = parser.parse_args()
    with open(args.job) as handle:
        job = Job.from_json(json.load(handle))
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop ships with uvicorn[standard]
        result = asyncio.run(run_job(job, _stdin_go))
    else:
        result = uvloop.run(run_job(job, _stdin_go))
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

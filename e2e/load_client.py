"""Load for the zero-downtime rollout check, run inside the cluster.

Sends Open Inference Protocol v2 REST requests through a Service from several threads until the
expected model version has answered every request for ``--settle`` seconds (or ``--max-seconds``
pass), then prints one JSON summary line. Standard library only, so it runs on the runtime
image's Python; the suite's endpoints mode imports :func:`run_load` and runs it here instead,
picking a ready endpoint per request. Each request opens a new connection: kube-proxy balances
connections, and a new one only ever reaches a ready endpoint, which is the guarantee a rollout
must keep.

    python3 load_client.py --url http://mlp.ns.svc:8080 --model mlp --expect-version 2
"""

from __future__ import annotations

import argparse
import collections
import json
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="base URL of the model's Service")
    parser.add_argument("--model", required=True, help="served model name")
    parser.add_argument(
        "--expect-version", default=None, help="version the rollout ends on (else: run on)"
    )
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--settle", type=float, default=10.0, help="seconds of expected-only")
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--features", type=int, default=64)
    return parser.parse_args(argv)


class Tally:
    """Counts shared by the worker threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests = 0
        self.failures = 0
        self.errors: list[str] = []
        self.versions: collections.Counter[str] = collections.Counter()
        self.last_other_version_at = time.monotonic()
        self.expected_seen = False

    def success(self, version: str, expected: str) -> None:
        with self.lock:
            self.requests += 1
            self.versions[version] += 1
            if version == expected:
                self.expected_seen = True
            else:
                self.last_other_version_at = time.monotonic()

    def failure(self, error: str) -> None:
        with self.lock:
            self.requests += 1
            self.failures += 1
            if len(self.errors) < 10:
                self.errors.append(error)

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {
                "requests": self.requests,
                "failures": self.failures,
                "errors": list(self.errors),
                "versions": dict(self.versions),
            }


def infer_once(url: str, body: bytes) -> str:
    """One inference; returns the model_version that answered, raises on any failure."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json", "Connection": "close"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        payload = json.load(response)
    outputs = payload.get("outputs") or []
    if not outputs or not outputs[0].get("data"):
        raise ValueError(f"response without outputs: {payload}")
    return str(payload.get("model_version"))


def request_body(features: int) -> bytes:
    """One OIP v2 REST request of one row of ``features`` FP32 values."""
    tensor = {"name": "INPUT__0", "datatype": "FP32", "shape": [1, features]}
    return json.dumps({"inputs": [{**tensor, "data": [0.5] * features}]}).encode()


def run_load(
    base_url: Callable[[], str],
    *,
    model: str,
    expect_version: str | None,
    concurrency: int = 4,
    settle: float = 10.0,
    min_seconds: float = 5.0,
    max_seconds: float = 300.0,
    features: int = 64,
    stop: threading.Event | None = None,
    report: Callable[[dict[str, Any]], None] = lambda line: print(json.dumps(line), flush=True),
) -> dict[str, Any]:
    """Send requests from ``concurrency`` threads until ``expect_version`` has answered alone for
    ``settle`` seconds (never, when it is ``None``), ``stop`` is set or ``max_seconds`` pass.

    ``base_url`` is called for every request (a fixed Service URL, or a fresh pick among a
    Service's ready endpoints); a failure to pick counts as a failed request. Returns the summary.
    """
    stop = stop or threading.Event()
    body = request_body(features)
    tally = Tally()
    done = threading.Event()

    def worker() -> None:
        while not done.is_set():
            try:
                url = f"{base_url().rstrip('/')}/v2/models/{model}/infer"
                tally.success(infer_once(url, body), expect_version or "")
            except Exception as error:  # any failure counts: HTTP errors, resets, bad bodies
                tally.failure(f"{type(error).__name__}: {error}")
                time.sleep(0.05)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(concurrency)]
    started = time.monotonic()
    report({"event": "started", "model": model})
    for thread in threads:
        thread.start()
    settled = False
    while True:
        stop.wait(1.0)
        now = time.monotonic()
        elapsed = now - started
        with tally.lock:
            settled = (
                expect_version is not None
                and tally.expected_seen
                and now - tally.last_other_version_at >= settle
            )
        report({"event": "progress", "seconds": round(elapsed), **tally.snapshot()})
        finished = settled and elapsed >= min_seconds
        if finished or stop.is_set() or elapsed >= max_seconds:
            break
    done.set()
    for thread in threads:
        thread.join(timeout=15)
    summary = {
        "event": "summary",
        "settled": settled,
        "seconds": round(time.monotonic() - started, 1),
        **tally.snapshot(),
    }
    report(summary)
    return summary


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The command line: load one fixed Service URL."""
    return run_load(
        lambda: str(args.url),
        model=args.model,
        expect_version=args.expect_version,
        concurrency=args.concurrency,
        settle=args.settle,
        min_seconds=args.min_seconds,
        max_seconds=args.max_seconds,
        features=args.features,
    )


if __name__ == "__main__":
    run(parse_args())

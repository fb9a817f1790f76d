"""Front-end processes (``frontend_processes``): requests spread over them and still add up to
one server's statistics and metrics; each side's death ends the other.

The protocol, bad-input and streaming suites run against two front ends as well (their server
fixtures take ``FRONT_END_MODES``); this module covers what only exists with several processes.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from ferry_runtime.frontends import channel as wire
from ferry_runtime.frontends.channel import BlockingChannel
from ferry_runtime.frontends.exposition import merge_expositions
from ferry_runtime.protocol.types import ModelSignature, TensorSpec
from ferry_runtime.settings import RuntimeSettings
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from runtime_helpers import RunningServer, launch_server, serve_process, write_model_dir

REQUESTS = 40
FRONT_END_COMMAND = (sys.executable, "-m", "ferry_runtime.frontends")


def samples(text: bytes | str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    if isinstance(text, bytes):
        text = text.decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def process_exposition(requests: int, ready: int, latency: float) -> bytes:
    registry = CollectorRegistry()
    Counter("ferry_requests", "n", ["protocol"], registry=registry).labels("rest").inc(requests)
    Histogram("ferry_batch_size", "rows", buckets=(1, 8), registry=registry).observe(latency)
    Gauge("ferry_model_ready", "ready", registry=registry).set(ready)
    Gauge("ferry_requests_in_flight", "now", registry=registry).set(requests)
    return generate_latest(registry)


def test_merged_exposition_sums_series_and_keeps_the_server_state() -> None:
    merged = samples(
        merge_expositions(
            [
                process_exposition(3, 1, 0.5),
                process_exposition(4, 0, 5),
                process_exposition(0, 0, 9),
            ]
        )
    )
    assert merged["ferry_requests_total", (("protocol", "rest"),)] == 7
    assert merged["ferry_requests_in_flight", ()] == 7
    assert merged["ferry_model_ready", ()] == 1  # the state of the server, not a count
    assert merged["ferry_batch_size_bucket", (("le", "1.0"),)] == 1
    assert merged["ferry_batch_size_bucket", (("le", "8.0"),)] == 2
    assert merged["ferry_batch_size_bucket", (("le", "+Inf"),)] == 3
    assert merged["ferry_batch_size_count", ()] == 3
    assert merged["ferry_batch_size_sum", ()] == 14.5


@pytest.fixture(scope="module")
def front_ends(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = launch_server(
        write_model_dir(tmp_path_factory.mktemp("affine")),
        model_name="affine",
        max_batch_size=8,
        frontend_processes=2,
    )
    yield running
    assert running.stop() == 0


def test_requests_spread_over_the_front_ends_add_up(front_ends: RunningServer) -> None:
    stats_url = f"{front_ends.http_base}/v2/models/affine/stats"
    before = httpx.get(stats_url).json()["model_stats"][0]
    data = np.arange(4, dtype=np.float32)
    body = {"inputs": [{"name": "INPUT__0", "datatype": "FP32", "shape": [1, 4], "data": []}]}
    for index in range(REQUESTS):  # a new connection each: the kernel spreads them
        body["inputs"][0]["data"] = (data + index).tolist()
        with httpx.Client() as client:
            reply = client.post(f"{front_ends.http_base}/v2/models/affine/infer", json=body)
        assert reply.status_code == 200, reply.text
        assert reply.json()["outputs"][0]["data"] == ((data + index) * 2 + 1).tolist()
    for index in range(REQUESTS):
        client = grpcclient.InferenceServerClient(front_ends.grpc_url)
        tensor = grpcclient.InferInput("INPUT__0", [1, 4], "FP32")
        tensor.set_data_from_numpy((data - index).reshape(1, 4))
        result = client.infer("affine", [tensor]).as_numpy("OUTPUT__0")
        np.testing.assert_array_equal(result, ((data - index) * 2 + 1).reshape(1, 4))
        client.close()

    peers = front_ends.server._service.peers
    assert len(peers) == 2
    assert all(peer.requests > 0 for peer in peers), [peer.requests for peer in peers]
    after = httpx.get(stats_url).json()["model_stats"][0]
    assert after["inference_count"] - before["inference_count"] == 2 * REQUESTS
    success = after["inference_stats"]["success"]["count"]
    assert success - before["inference_stats"]["success"]["count"] == 2 * REQUESTS
    for _ in range(4):  # whichever front end answers the scrape, every process is counted
        with httpx.Client() as client:
            merged = samples(client.get(f"{front_ends.http_base}/metrics").text)
        rest = merged["ferry_requests_total", (("outcome", "success"), ("protocol", "rest"))]
        grpc = merged["ferry_requests_total", (("outcome", "success"), ("protocol", "grpc"))]
        assert (rest, grpc) == (REQUESTS, REQUESTS)
        assert merged["ferry_model_ready", ()] == 1
        assert merged["ferry_batch_size_count", ()] == after["execution_count"]


def test_a_front_end_that_dies_ends_the_server_with_status_1(tmp_path: Path) -> None:
    running = launch_server(write_model_dir(tmp_path / "m"), frontend_processes=2)
    front_end = running.server._front_ends.processes[0]
    front_end.kill()
    running.thread.join(30)
    assert not running.thread.is_alive(), "the compute process kept running"
    assert running.exit_codes == [1]
    survivor = running.server._front_ends.processes[1]
    assert survivor.wait(30) == 0  # drained and stopped, not orphaned


def start_front_end() -> tuple[subprocess.Popen[bytes], BlockingChannel, BlockingChannel]:
    """A front end whose compute process is this test: (process, data, control)."""
    data, data_theirs = socket.socketpair()
    control, control_theirs = socket.socketpair()
    fds = (data_theirs.fileno(), control_theirs.fileno())
    process = subprocess.Popen(
        [*FRONT_END_COMMAND, "--data-fd", str(fds[0]), "--control-fd", str(fds[1])],
        pass_fds=fds,
        stderr=subprocess.PIPE,
    )
    data_theirs.close()
    control_theirs.close()
    return process, BlockingChannel(data), BlockingChannel(control)


def test_a_front_end_ends_when_the_compute_process_is_gone() -> None:
    process, data, control = start_front_end()
    spec = TensorSpec("x", "FP32", (4,))
    signature = ModelSignature(
        name="m", version="1", platform="pytorch", inputs=(spec,), outputs=(spec,), max_batch_size=4
    )
    settings = RuntimeSettings(host="127.0.0.1", http_port=0, grpc_port=0, log_level="warning")
    control.send((wire.HELLO, signature, settings))
    assert data.recv(timeout=30) == (wire.LISTENING,)
    data.close()
    control.close()
    _, errors = process.communicate(timeout=30)
    assert process.returncode == 1
    assert b"the compute process is gone" in errors


def test_a_front_end_without_its_start_message_exits_1() -> None:
    process, data, control = start_front_end()
    control.send(("nonsense",))
    _, errors = process.communicate(timeout=30)
    data.close()
    control.close()
    assert process.returncode == 1
    assert b"no start message" in errors


def test_sigterm_with_front_ends_exits_0_and_stops_them(tmp_path: Path) -> None:
    process = serve_process(
        write_model_dir(tmp_path / "m"), http_port=0, grpc_port=0, frontend_processes=2
    )
    try:
        deadline = time.monotonic() + 60
        while len(children(process.pid)) < 2:
            assert process.poll() is None
            assert time.monotonic() < deadline, "front ends never started"
            time.sleep(0.1)
        front_ends = children(process.pid)
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=60)
        assert process.returncode == 0, output
        assert "2 front-end processes" in output
        assert "is gone" not in output  # the front ends were stopped, not lost
        for pid in front_ends:
            assert not Path(f"/proc/{pid}").exists() or is_zombie_free(pid)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(child) for child in text.split()]


def is_zombie_free(pid: int) -> bool:
    """A pid still listed belongs to some other process by now, not to a front end."""
    try:
        return b"ferry_runtime.frontends" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


def test_front_ends_share_the_compute_queue() -> None:
    from ferry_runtime.frontends.process import outstanding_share

    def share(queue: int, front_ends: int) -> int:
        settings = RuntimeSettings(
            max_queue_size=queue, max_batch_size=8, frontend_processes=front_ends
        )
        return outstanding_share(settings)

    assert share(1024, 1) == 1024 + 8
    assert share(1024, 3) == 342 + 8  # three shares cover the queue, none more than needed
    assert share(1, 2) == 1 + 8

"""The serving threads yield the CPU to the compute thread (``ferry_runtime.priority``)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest
from ferry_runtime import priority
from runtime_helpers import free_port, serve_process, write_model_dir

linux_only = pytest.mark.skipif(
    not os.path.isdir("/proc/self/task"), reason="per-thread niceness is read from /proc"
)


def thread_nice(pid: int, thread: int) -> int:
    """The niceness of one thread of ``pid`` (field 19 of its stat line)."""
    stat = Path(f"/proc/{pid}/task/{thread}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[16])


@linux_only
def test_deprioritize_raises_the_niceness_of_the_given_threads_only() -> None:
    started, release = threading.Event(), threading.Event()
    ids: list[int] = []

    def park() -> None:
        ids.append(threading.get_native_id())
        started.set()
        release.wait(10)

    worker = threading.Thread(target=park)
    worker.start()
    try:
        assert started.wait(10)
        me = threading.get_native_id()
        before_worker, before_me = thread_nice(os.getpid(), ids[0]), thread_nice(os.getpid(), me)
        assert ids[0] in priority.thread_ids()
        assert priority.deprioritize({ids[0], 999_999_999}, 3) == 1  # a gone thread is skipped
        assert thread_nice(os.getpid(), ids[0]) == min(19, before_worker + 3)
        assert thread_nice(os.getpid(), me) == before_me
        assert priority.deprioritize({ids[0]}, 0) == 0
    finally:
        release.set()
        worker.join()


@linux_only
def test_the_served_process_keeps_its_compute_thread_at_normal_priority(tmp_path: Path) -> None:
    http_port, grpc_port = free_port(), free_port()
    process = serve_process(
        write_model_dir(tmp_path / "m"),
        capture=False,
        http_port=http_port,
        grpc_port=grpc_port,
        serving_thread_nice=7,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, "server exited"
            assert time.monotonic() < deadline, "server never became ready"
            try:
                if httpx.get(f"http://127.0.0.1:{http_port}/v2/health/ready").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        base = os.getpriority(os.PRIO_PROCESS, 0)
        nices = {
            int(tid): thread_nice(process.pid, int(tid))
            for tid in os.listdir(f"/proc/{process.pid}/task")
        }
        assert nices[process.pid] == min(19, base + 7), "the event loop thread yields"
        assert base in nices.values(), "the compute thread keeps the process's niceness"
        assert httpx.get(f"http://127.0.0.1:{http_port}/v2/health/live").status_code == 200
    finally:
        process.terminate()
        assert process.wait(30) == 0

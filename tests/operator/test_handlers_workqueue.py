"""The keyed work queue: coalescing, one pass per key at a time, backoff respected."""

from __future__ import annotations

import asyncio

from ferry_operator.workqueue import WorkQueue


async def test_events_for_a_waiting_key_coalesce() -> None:
    seen: list[str] = []

    async def process(key: str) -> float | None:
        seen.append(key)
        return None

    queue: WorkQueue[str] = WorkQueue(process, concurrency=2)
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    queue.start()
    await asyncio.wait_for(queue.join(), 2)
    await queue.stop()
    assert sorted(seen) == ["a", "b"]


async def test_an_event_during_processing_runs_the_key_once_more_never_concurrently() -> None:
    running = 0
    passes = 0
    release = asyncio.Event()

    async def process(key: str) -> float | None:
        nonlocal running, passes
        running += 1
        assert running == 1
        passes += 1
        if passes == 1:
            await release.wait()
        running -= 1
        return None

    queue: WorkQueue[str] = WorkQueue(process, concurrency=4)
    queue.start()
    queue.add("a")
    await asyncio.sleep(0.01)
    for _ in range(3):
        queue.add("a")  # while the first pass runs
    release.set()
    await asyncio.wait_for(queue.join(), 2)
    await queue.stop()
    assert passes == 2


async def test_a_backoff_is_not_shortened_by_events() -> None:
    times: list[float] = []
    loop = asyncio.get_running_loop()

    async def process(key: str) -> float | None:
        times.append(loop.time())
        return 0.2 if len(times) == 1 else None

    queue: WorkQueue[str] = WorkQueue(process, concurrency=1)
    queue.start()
    queue.add("a")
    await asyncio.sleep(0.02)
    for _ in range(10):
        queue.add("a")
        await asyncio.sleep(0.005)
    await asyncio.wait_for(queue.join(), 2)
    await queue.stop()
    assert len(times) == 2
    assert times[1] - times[0] >= 0.19


async def test_concurrency_is_bounded_and_a_crash_does_not_kill_workers() -> None:
    active = 0
    peak = 0
    done: list[str] = []

    async def process(key: str) -> float | None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1
        if key == "boom" and "boom" not in done:
            done.append(key)
            raise RuntimeError("bug")
        done.append(key)
        return None

    queue: WorkQueue[str] = WorkQueue(process, concurrency=3)
    queue.start()
    for index in range(10):
        queue.add(f"k{index}")
    queue.add("boom")
    await asyncio.sleep(0.3)
    assert peak == 3
    assert {f"k{index}" for index in range(10)} <= set(done)
    assert queue.depth == 1  # "boom" waits out its delay instead of looping
    await queue.stop()

"""How the operator scales: N ModelDeployments in the cluster a kubeconfig names.

    .venv/bin/python bench/operator_scale.py --count 100 --count 1000 --count 3000 \
        [--slow 1000] [--kubeconfig K] [--allow-context C]

Measures, with the operator running in a child process (so its memory is its own):

* time from the last create (and from the first) until every ModelDeployment has its Deployment
  and Service and ``status.observedGeneration == metadata.generation``, seen through watches
  (the benchmark's own polling would load the API server it measures);
* API requests the operator made per object (Kopf's lists, watches and everything else
  counted by the operator's own connection, minus the start-up sync before the first object);
* writes made by a second operator process resuming over the unchanged objects (should be 0);
* the operator process's peak RSS (VmHWM).

The objects ask for ``replicas: 0``: the benchmark measures the control plane, not pod
scheduling. Targets (a real API server): converge <= 10 s after the 1,000th create, <= 5 API
calls per object, 0 writes on an unchanged resume, <= 100 MiB RSS.

``--slow N`` adds a run of N objects through a loopback proxy that plays a slow, throttling API
server: every request waits ``--slow-latency-ms`` more, and a share (``--slow-throttle``) of the
writes is answered 429 with ``Retry-After: 1`` the way API Priority and Fairness does. It reports
the peak of concurrent non-watch requests (bounded, not growing with N), the 429s, how many were
retried before their ``Retry-After`` passed (should be 0) and requests per object (a retry storm
would multiply it).

The operator child answers the parent's report requests over a pipe and never sends unasked, so
it can never block on a full pipe (a report every 100 ms used to fill it while the parent was
busy creating objects, which froze the operator's event loop). Prints the figures and writes JSON
to bench/results/. Refuses any kube context not named ``kind-ferry*`` unless ``--allow-context``
names it (the same guard as e2e/): it creates and deletes a namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import datetime
import json
import multiprocessing
import multiprocessing.connection
import os
import random
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import aiohttp.web
import kopf
import yaml
from ferry_operator import constants
from ferry_operator.cluster import MODEL_DEPLOYMENTS, Connection, Resource
from ferry_operator.errors import ApiError

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
NAMESPACES = Resource("", "v1", "namespaces", namespaced=False)
DEPLOYMENTS = Resource("apps", "v1", "deployments")
SERVICES = Resource("", "v1", "services")
TARGETS = {
    "converge_seconds_per_1000": 10.0,
    "requests_per_object": 5.0,
    "resume_writes": 0,
    "peak_rss_mib": 100.0,
}


@dataclass
class Options:
    """What to run against and how big."""

    count: int = 1000
    namespace: str = "ferry-bench"
    kubeconfig: Path | None = None
    allow_context: list[str] = field(default_factory=list)
    timeout_s: float = 300.0
    workers: int = 32
    output: Path | None = None
    keep: bool = False
    counts: list[int] = field(default_factory=lambda: [1000])
    """Every size to measure, one run (and namespace) each."""
    slow_count: int = 0
    """Objects of the slow-API-server run (0: no such run)."""
    slow_latency_ms: float = 100.0
    throttle: float = 0.1
    slow_latency_s: float | None = None
    """Set on the slow run itself: the proxy's added latency."""
    cleanup_wait_s: float = 600.0


def parse_args(argv: list[str] | None = None) -> Options:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--count",
        "-n",
        type=int,
        action="append",
        default=None,
        help="ModelDeployments to create (repeatable: one run per size; default 1000)",
    )
    parser.add_argument(
        "--slow",
        type=int,
        default=0,
        metavar="N",
        help="also run N objects through a slow, throttling API server proxy",
    )
    parser.add_argument("--slow-latency-ms", type=float, default=100.0)
    parser.add_argument(
        "--slow-throttle", type=float, default=0.1, help="share of writes answered 429"
    )
    parser.add_argument("--namespace", default="ferry-bench", help="namespace to create them in")
    parser.add_argument("--kubeconfig", type=Path, default=None, help="default: $KUBECONFIG")
    parser.add_argument(
        "--allow-context",
        action="append",
        default=[],
        help="also allow this kube context (default: only kind-ferry*)",
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds to converge")
    parser.add_argument("--workers", type=int, default=32, help="operator's concurrent reconciles")
    parser.add_argument("--output", type=Path, default=None, help="JSON file to write")
    parser.add_argument("--keep", action="store_true", help="keep the namespace afterwards")
    args = parser.parse_args(argv)
    counts = args.count or [1000]
    return Options(
        count=counts[0],
        counts=counts,
        slow_count=args.slow,
        slow_latency_ms=args.slow_latency_ms,
        throttle=args.slow_throttle,
        namespace=args.namespace,
        kubeconfig=args.kubeconfig,
        allow_context=args.allow_context,
        timeout_s=args.timeout,
        workers=args.workers,
        output=args.output,
        keep=args.keep,
    )


# ---------------------------------------------------------------------------------------------
# The cluster
# ---------------------------------------------------------------------------------------------


def kubeconfig_path(options: Options) -> Path:
    """The kubeconfig file in use."""
    if options.kubeconfig is not None:
        return options.kubeconfig
    env = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
    return Path(env or "~/.kube/config").expanduser()


def current_context(path: Path) -> str:
    """The current-context of a kubeconfig."""
    config = yaml.safe_load(path.read_text()) or {}
    return str(config.get("current-context") or "")


def check_context(context: str, allowed: list[str]) -> None:
    """Refuse any context but a kind-ferry* test cluster or one named with --allow-context."""
    if context.startswith("kind-ferry") or context in allowed:
        return
    raise SystemExit(
        f"refusing kube context {context!r}: the benchmark creates and deletes a namespace; it "
        "only runs against a context named kind-ferry* or one named with --allow-context NAME"
    )


def login_from(path: Path) -> kopf.ConnectionInfo:
    """Credentials of the kubeconfig's current context (Kopf's minimal loader)."""
    previous = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = str(path)
    try:
        info = kopf.login_with_kubeconfig(settings=kopf.OperatorSettings())
    finally:
        if previous is None:
            os.environ.pop("KUBECONFIG", None)
        else:
            os.environ["KUBECONFIG"] = previous
    if info is None:
        raise SystemExit(f"cannot read credentials from {path}")
    return info


def model_deployment(name: str, namespace: str) -> dict[str, Any]:
    """One benchmark ModelDeployment (zero replicas: no pods to schedule)."""
    return {
        "apiVersion": constants.API_VERSION,
        "kind": constants.KIND,
        "metadata": {"name": name, "namespace": namespace, "labels": {"bench": "operator-scale"}},
        "spec": {
            "model": {"uri": "http://model-store.invalid/bench/model.tar.gz"},
            "replicas": 0,
            "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        },
    }


async def _ignore_conflict(coro: Any) -> None:
    try:
        await coro
    except ApiError as error:
        if error.status != 409:
            raise


async def create_all(client: Connection, options: Options) -> None:
    """Create the N objects, 50 requests in flight at most."""
    gate = asyncio.Semaphore(50)

    async def create(index: int) -> None:
        body = model_deployment(f"bench-{index:05d}", options.namespace)
        async with gate:
            await _ignore_conflict(
                client.request("POST", MODEL_DEPLOYMENTS.path(options.namespace), body=body)
            )

    await asyncio.gather(*(create(index) for index in range(options.count)))


class Convergence:
    """What the API server says, kept current by watches: every benchmark object with its
    Deployment, its Service and an up-to-date ``status.observedGeneration``."""

    def __init__(self, client: Connection, namespace: str, count: int) -> None:
        self.client = client
        self.namespace = namespace
        self.count = count
        self.pending: dict[str, bool] = {}
        """name -> status.observedGeneration == metadata.generation"""
        self.children: dict[str, set[str]] = {"Deployment": set(), "Service": set()}
        self.done = asyncio.Event()
        self.converged_at: float | None = None
        self._tasks: list[asyncio.Task[None]] = []

    def _check(self) -> None:
        if self.converged_at is not None or len(self.pending) < self.count:
            return
        names = set(self.pending)
        if all(self.pending.values()) and all(names <= c for c in self.children.values()):
            self.converged_at = time.monotonic()
            self.done.set()

    def _owner(self, kind: str, event: str, item: Mapping[str, Any]) -> None:
        metadata = item.get("metadata") or {}
        name = str(metadata.get("name") or "")
        if not name.startswith("bench-"):
            return
        if kind == constants.KIND:
            if event == "DELETED":
                self.pending.pop(name, None)
            else:
                observed = (item.get("status") or {}).get("observedGeneration")
                self.pending[name] = observed == metadata.get("generation")
        elif event == "DELETED":
            self.children[kind].discard(name)
        else:
            self.children[kind].add(name)
        self._check()

    async def start(self) -> None:
        """List each kind, then follow it; returns once the first lists are in."""
        selector = {"labelSelector": f"{constants.LABEL_MANAGED_BY}={constants.MANAGED_BY}"}
        listed = []
        for kind, resource, params in (
            (constants.KIND, MODEL_DEPLOYMENTS, {}),
            ("Deployment", DEPLOYMENTS, selector),
            ("Service", SERVICES, selector),
        ):
            answer = await self.client.request("GET", resource.path(self.namespace), params=params)
            for item in answer.get("items", []):
                self._owner(kind, "ADDED", item)
            version = str((answer.get("metadata") or {}).get("resourceVersion") or "")
            listed.append((kind, resource, params, version))
        for kind, resource, params, version in listed:
            self._tasks.append(asyncio.create_task(self._follow(kind, resource, params, version)))

    async def _follow(
        self, kind: str, resource: Resource, params: Mapping[str, str], version: str
    ) -> None:
        session = self.client.session
        while True:
            query = {**params, "watch": "true", "allowWatchBookmarks": "true"}
            if version:
                query["resourceVersion"] = version
            try:
                async with session.get(
                    self.client.server + resource.path(self.namespace),
                    params=query,
                    timeout=aiohttp.ClientTimeout(total=None, sock_read=120),
                ) as response:
                    if response.status == 410:  # expired: list again
                        version = ""
                        continue
                    buffer = b""
                    async for chunk in response.content.iter_any():
                        buffer += chunk
                        *lines, buffer = buffer.split(b"\n")
                        for line in lines:
                            if not line.strip():
                                continue
                            event = json.loads(line)
                            item = event.get("object") or {}
                            rv = (item.get("metadata") or {}).get("resourceVersion")
                            if event.get("type") == "ERROR":
                                version = ""
                                break
                            version = str(rv or version)
                            if event.get("type") != "BOOKMARK":
                                self._owner(kind, str(event.get("type")), item)
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.5)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


# ---------------------------------------------------------------------------------------------
# The operator, in a child process
# ---------------------------------------------------------------------------------------------


def _operator_main(
    kubeconfig: str, namespace: str, workers: int, pipe: multiprocessing.connection.Connection
) -> None:
    """Child process: run the operator; answer each report request until told to stop."""
    os.environ["KUBECONFIG"] = kubeconfig
    asyncio.run(_operate(namespace, workers, pipe))


async def _operate(
    namespace: str, workers: int, pipe: multiprocessing.connection.Connection
) -> None:
    from ferry_operator.handlers import Operator, configure_logging
    from ferry_operator.settings import OperatorSettings

    settings = OperatorSettings(
        standalone=True, watch_namespaces=(namespace,), workers=workers, log_level="warning"
    )
    configure_logging(settings)
    operator = Operator(settings, identity="operator-scale-bench")
    stop, ready = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    task = asyncio.create_task(operator.run(stop_flag=stop, ready_flag=ready))

    def report() -> dict[str, Any]:
        controller, stats = operator.controller, operator.connection.stats
        return {
            "ready": ready.is_set(),
            "requests": stats.total,
            "writes": stats.writes,
            "by_verb": dict(stats.by_verb),
            "processed": controller.queue.processed,
            "depth": controller.queue.depth,
            "active": controller.queue.active,
        }

    def on_message() -> None:
        # The parent sends one request and then waits for the answer, so this send always
        # finds an empty pipe: the operator's loop never waits on the parent.
        try:
            message = pipe.recv()
        except (EOFError, OSError):  # the parent is gone
            loop.remove_reader(pipe.fileno())
            stop.set()
            return
        if message == "stop":
            loop.remove_reader(pipe.fileno())
            stop.set()
        else:
            pipe.send(report())

    loop.add_reader(pipe.fileno(), on_message)
    with contextlib.suppress(asyncio.CancelledError):
        await task
    with contextlib.suppress(BrokenPipeError, OSError):
        pipe.send({**report(), "exited": True})


class OperatorProcess:
    """The operator under test, in its own process."""

    def __init__(self, kubeconfig: Path, options: Options) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child_end = context.Pipe()
        self.process = context.Process(
            target=_operator_main,
            args=(str(kubeconfig), options.namespace, options.workers, child_end),
            daemon=True,
        )
        self.process.start()
        child_end.close()
        self._asking = asyncio.Lock()
        self.latest: dict[str, Any] = {}

    def _receive(self, timeout_s: float) -> dict[str, Any] | None:
        if self._pipe.poll(timeout_s):
            try:
                answer: dict[str, Any] = self._pipe.recv()
                return answer
            except EOFError:
                return None
        return None

    async def poll(self) -> dict[str, Any]:
        """Ask the child for its counters (in a thread: the parent's loop keeps running)."""
        async with self._asking:
            if not self.process.is_alive():
                raise RuntimeError(f"the operator process exited ({self.process.exitcode})")
            try:
                self._pipe.send("report")
            except (BrokenPipeError, OSError) as error:
                raise RuntimeError("the operator process is gone") from error
            answer = await asyncio.to_thread(self._receive, 30.0)
            if answer is None:
                raise RuntimeError("the operator process did not answer within 30 s")
            self.latest = answer
            return answer

    async def wait(self, predicate: Any, timeout_s: float, what: str) -> dict[str, Any]:
        """Poll the reports until ``predicate(report)``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            report = await self.poll()
            if predicate(report):
                return report
            await asyncio.sleep(0.1)
        raise TimeoutError(f"operator: {what} not reached in {timeout_s}s: {self.latest}")

    async def settled(self, timeout_s: float, quiet_s: float = 1.0) -> dict[str, Any]:
        """Wait until it has synced and its request count stopped moving for ``quiet_s``."""
        await self.wait(lambda r: r.get("ready"), timeout_s, "ready")
        last, since = -1, time.monotonic()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            report = await self.poll()
            idle = report["depth"] == 0 and report["active"] == 0
            if report["requests"] != last or not idle:
                last, since = report["requests"], time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return report
            await asyncio.sleep(0.1)
        raise TimeoutError(f"operator did not settle: {self.latest}")

    def peak_rss_mib(self) -> float | None:
        """VmHWM of the process (Linux), in MiB."""
        status = Path(f"/proc/{self.process.pid}/status")
        if not status.exists():
            return None
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return None

    async def stop(self) -> dict[str, Any]:
        """Stop it gracefully; its final report."""
        if not self.process.is_alive():
            return self.latest
        async with self._asking:
            with contextlib.suppress(BrokenPipeError, OSError):
                self._pipe.send("stop")
            final = await asyncio.to_thread(self._receive, 30.0)
        await asyncio.to_thread(self.process.join, 10)
        if self.process.is_alive():
            self.process.kill()
        return final or self.latest


# ---------------------------------------------------------------------------------------------
# A slow, throttling API server (a loopback proxy in front of the real one)
# ---------------------------------------------------------------------------------------------

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class SlowApiServer:
    """Loopback HTTP proxy to the API server: ``latency_s`` more on every request, and 429 with
    ``Retry-After: 1`` on a share ``throttle`` of the writes, as API Priority and Fairness answers
    when a priority level's queues are full. It holds the real credentials; its clients need none.
    Counts concurrent non-watch requests and retries sent before their ``Retry-After`` passed."""

    RETRY_AFTER_S = 1.0

    def __init__(
        self, upstream: kopf.ConnectionInfo, *, latency_s: float, throttle: float, seed: int = 1
    ) -> None:
        self.upstream = upstream
        self.latency_s = latency_s
        self.throttle = throttle
        self.random = random.Random(seed)
        self.in_flight = 0
        self.peak_in_flight = 0
        self.requests = 0
        self.throttled = 0
        self.early_retries = 0
        self._blocked_until: dict[tuple[str, str], float] = {}
        self._runner: aiohttp.web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self.url = ""

    async def start(self) -> str:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ssl=self.upstream.as_ssl_context()),
            headers=self.upstream.as_http_headers(),
            auto_decompress=False,
        )
        server = aiohttp.web.Server(self._handle)
        self._runner = aiohttp.web.AppRunner(server, handle_signals=False)
        await self._runner.setup()
        site = aiohttp.web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    def snapshot(self) -> dict[str, Any]:
        return {
            "latency_ms": round(self.latency_s * 1000),
            "throttled_share_of_writes": self.throttle,
            "requests": self.requests,
            "answered_429": self.throttled,
            "retries_before_retry_after": self.early_retries,
            "peak_concurrent_requests": self.peak_in_flight,
        }

    async def _handle(self, request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        assert self._session is not None
        watching = request.query.get("watch") in {"true", "1"}
        self.requests += 1
        if not watching:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.latency_s)
            key = (request.method, request.path)
            now = time.monotonic()
            until = self._blocked_until.pop(key, None)
            if until is not None and now < until:
                self.early_retries += 1
            if request.method in WRITE_METHODS and self.random.random() < self.throttle:
                self.throttled += 1
                self._blocked_until[key] = now + self.RETRY_AFTER_S
                return aiohttp.web.json_response(
                    {
                        "apiVersion": "v1",
                        "kind": "Status",
                        "status": "Failure",
                        "reason": "TooManyRequests",
                        "message": "too many requests, please try again later",
                        "code": 429,
                        "details": {"retryAfterSeconds": int(self.RETRY_AFTER_S)},
                    },
                    status=429,
                    headers={"Retry-After": str(int(self.RETRY_AFTER_S))},
                )
            headers = {
                name: value
                for name, value in request.headers.items()
                if name.lower() in {"content-type", "accept", "user-agent"}
            }
            body = await request.read()
            async with self._session.request(
                request.method,
                self.upstream.server.rstrip("/") + request.path_qs,
                headers=headers,
                data=body or None,
                timeout=aiohttp.ClientTimeout(total=None),
            ) as upstream:
                response = aiohttp.web.StreamResponse(status=upstream.status)
                for name in ("Content-Type", "Retry-After"):
                    if name in upstream.headers:
                        response.headers[name] = upstream.headers[name]
                await response.prepare(request)
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
                return response
        finally:
            if not watching:
                self.in_flight -= 1


def proxy_kubeconfig(url: str, path: Path) -> Path:
    """A kubeconfig pointing at the proxy (which adds the real credentials)."""
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "slow", "cluster": {"server": url}}],
                "users": [{"name": "bench", "user": {"token": "via-proxy"}}],
                "contexts": [{"name": "slow", "context": {"cluster": "slow", "user": "bench"}}],
                "current-context": "slow",
            }
        )
    )
    return path


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


async def _delete_namespace(client: Connection, namespace: str, wait_s: float) -> None:
    """Delete the namespace and wait (bounded) until it is gone, so the garbage collection of
    one run does not load the API server during the next."""
    with contextlib.suppress(ApiError):
        await client.request("DELETE", NAMESPACES.path(name=namespace))
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            found = await client.request("GET", NAMESPACES.path(name=namespace))
        except ApiError as error:
            if error.not_found:
                return
        else:
            if found.get("kind") != "Namespace":
                return  # not the object (a test double answering with a list)
        await asyncio.sleep(2.0)


async def run_benchmark(options: Options) -> dict[str, Any]:
    """Run it; the figures as a dict."""
    path = kubeconfig_path(options)
    context = current_context(path)
    check_context(context, options.allow_context)
    info = login_from(path)
    client = Connection(lambda: info, request_timeout_s=60)
    await client.open()
    slow: SlowApiServer | None = None
    operator_kubeconfig = path
    if options.slow_latency_s is not None:
        slow = SlowApiServer(info, latency_s=options.slow_latency_s, throttle=options.throttle)
        url = await slow.start()
        workdir = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
        operator_kubeconfig = proxy_kubeconfig(url, workdir / "kubeconfig")
    try:
        await _ignore_conflict(
            client.request(
                "POST",
                NAMESPACES.path(),
                body={
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": {"name": options.namespace},
                },
            )
        )
        convergence = Convergence(client, options.namespace, options.count)
        await convergence.start()
        first = OperatorProcess(operator_kubeconfig, options)
        try:
            baseline = await first.settled(options.timeout_s)
            slow_baseline = slow.snapshot() if slow else None
            started = time.monotonic()
            await create_all(client, options)
            created = time.monotonic()
            try:
                await asyncio.wait_for(convergence.done.wait(), options.timeout_s)
            except TimeoutError:
                missing = sum(1 for ok in convergence.pending.values() if not ok)
                raise TimeoutError(
                    f"{options.count} objects did not converge in {options.timeout_s}s: "
                    f"{missing} without an up-to-date status, {first.latest}"
                ) from None
            assert convergence.converged_at is not None
            at_convergence = await first.settled(options.timeout_s)
            peak_rss = first.peak_rss_mib()
        finally:
            await convergence.stop()
            await first.stop()

        second = OperatorProcess(operator_kubeconfig, options)
        try:
            await second.wait(
                lambda r: r["processed"] >= options.count, options.timeout_s, "resync"
            )
            resumed = await second.settled(options.timeout_s)
            resume_rss = second.peak_rss_mib()
        finally:
            await second.stop()
    finally:
        if not options.keep:
            await _delete_namespace(client, options.namespace, options.cleanup_wait_s)
        await client.close()
        if slow is not None:
            await slow.stop()

    requests = at_convergence["requests"] - baseline["requests"]
    writes = at_convergence["writes"] - baseline["writes"]
    resume_writes = resumed["writes"]
    after_last = convergence.converged_at - created
    target_s = TARGETS["converge_seconds_per_1000"] * max(1.0, options.count / 1000)
    results: dict[str, Any] = {
        "benchmark": "operator_scale",
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "context": context,
        "server": info.server,
        "count": options.count,
        "workers": options.workers,
        "create_seconds": round(created - started, 3),
        "converge_seconds": round(convergence.converged_at - started, 3),
        "converge_after_last_create_seconds": round(after_last, 3),
        "converge_target_seconds": target_s,
        "operator_requests": requests,
        "operator_writes": writes,
        "requests_per_object": round(requests / options.count, 3),
        "writes_per_object": round(writes / options.count, 3),
        "startup_requests": baseline["requests"],
        "requests_by_verb": _difference(at_convergence["by_verb"], baseline["by_verb"]),
        "resume_requests": resumed["requests"],
        "resume_writes": resume_writes,
        "peak_rss_mib": round(peak_rss, 1) if peak_rss is not None else None,
        "resume_peak_rss_mib": round(resume_rss, 1) if resume_rss is not None else None,
        "targets": TARGETS,
    }
    if slow is not None and slow_baseline is not None:
        results["slow_api_server"] = slow.snapshot()
    rss_ok = peak_rss is None or peak_rss <= TARGETS["peak_rss_mib"]
    results["meets_targets"] = {
        "converge_seconds": after_last <= target_s,
        "requests_per_object": results["requests_per_object"] <= TARGETS["requests_per_object"],
        "resume_writes": resume_writes == TARGETS["resume_writes"],
        "peak_rss_mib": rss_ok,
    }
    if slow is not None:
        results["meets_targets"]["no_retry_before_retry_after"] = slow.early_retries == 0
    results["ratios_to_targets"] = {
        "converge_seconds": round(after_last / target_s, 3),
        "requests_per_object": round(
            results["requests_per_object"] / TARGETS["requests_per_object"], 3
        ),
        "peak_rss_mib": (
            round(peak_rss / TARGETS["peak_rss_mib"], 3) if peak_rss is not None else None
        ),
    }
    return results


def _difference(after: Mapping[str, int], before: Mapping[str, int]) -> dict[str, int]:
    return {
        key: after[key] - before.get(key, 0)
        for key in sorted(after)
        if after[key] - before.get(key, 0)
    }


def report(results: Mapping[str, Any]) -> str:
    """The figures as text."""
    met = results["meets_targets"]

    def line(label: str, value: str, key: str) -> str:
        return f"  {label:<28}{value:>12}  [{'ok' if met[key] else 'MISSED'}]"

    rss = results["peak_rss_mib"]
    slow = results.get("slow_api_server")
    title = f"operator scale: {results['count']} ModelDeployments on {results['context']}"
    if slow:
        title += f" through a slow API server (+{slow['latency_ms']} ms, 429 on a share of writes)"
    lines = [
        title,
        line(
            "converged after last create",
            f"{results['converge_after_last_create_seconds']:.2f} s",
            "converge_seconds",
        )
        + f"  (target {results['converge_target_seconds']:.0f} s; from the first create "
        f"{results['converge_seconds']:.2f} s, creating took {results['create_seconds']:.2f} s)",
        line(
            "requests per object",
            f"{results['requests_per_object']:.2f}",
            "requests_per_object",
        )
        + f"  (writes per object {results['writes_per_object']:.2f})",
        line("writes on resume", str(results["resume_writes"]), "resume_writes"),
        line("peak RSS", f"{rss:.1f} MiB" if rss is not None else "n/a", "peak_rss_mib"),
    ]
    if slow:
        lines.append(
            line(
                "retries before Retry-After",
                str(slow["retries_before_retry_after"]),
                "no_retry_before_retry_after",
            )
            + f"  ({slow['answered_429']} answered 429; peak concurrent requests "
            f"{slow['peak_concurrent_requests']})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    options = parse_args(argv)
    runs = [
        dataclasses.replace(options, count=count, namespace=f"{options.namespace}-{count}")
        for count in options.counts
    ]
    if options.slow_count:
        runs.append(
            dataclasses.replace(
                options,
                count=options.slow_count,
                namespace=f"{options.namespace}-slow-{options.slow_count}",
                slow_latency_s=options.slow_latency_ms / 1000,
            )
        )
    if len(runs) == 1:
        runs[0] = dataclasses.replace(runs[0], namespace=options.namespace)
    everything: list[dict[str, Any]] = []
    for run in runs:
        results = asyncio.run(run_benchmark(run))
        print(report(results), flush=True)
        everything.append(results)
    if options.output is not None:
        output = options.output
    elif len(runs) == 1 and runs[0].slow_latency_s is None:
        output = RESULTS / f"operator-scale-{runs[0].count}.json"
    else:
        output = RESULTS / "operator-scale.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    payload: Any = everything[0] if len(everything) == 1 else {"runs": everything}
    output.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {output}")
    return 0 if all(all(r["meets_targets"].values()) for r in everything) else 1


if __name__ == "__main__":
    sys.exit(main())

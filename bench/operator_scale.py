"""How the operator scales: N ModelDeployments in the cluster a kubeconfig names.

    .venv/bin/python bench/operator_scale.py --count 1000 [--kubeconfig K] [--allow-context C]

Measures, with the operator running in a child process (so its memory is its own):

* time from the first create until every ModelDeployment has its Deployment and Service and
  ``status.observedGeneration == metadata.generation``;
* API requests the operator made per object (Kopf's lists, watches and everything else
  counted by the operator's own connection, minus the start-up sync before the first object);
* writes made by a second operator process resuming over the unchanged objects (should be 0);
* the operator process's peak RSS (VmHWM).

The objects ask for ``replicas: 0``: the benchmark measures the control plane, not pod
scheduling. Targets (a real API server): 1,000 objects converge in <= 10 s, <= 5 API calls per
object, 0 writes on an unchanged resume, <= 100 MiB RSS. Prints the figures and writes JSON to
bench/results/. Refuses any kube context not named ``kind-ferry*`` unless ``--allow-context``
names it (the same guard as e2e/): it creates and deletes a namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import multiprocessing
import multiprocessing.connection
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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


def parse_args(argv: list[str] | None = None) -> Options:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", "-n", type=int, default=1000, help="ModelDeployments to create")
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
    return Options(
        count=args.count,
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


async def converged(client: Connection, options: Options) -> bool:
    """Whether every object has its children and an up-to-date observedGeneration."""
    selector = {"labelSelector": f"{constants.LABEL_MANAGED_BY}={constants.MANAGED_BY}"}
    listed = await client.request("GET", MODEL_DEPLOYMENTS.path(options.namespace))
    items = [
        item for item in listed.get("items", []) if item["metadata"]["name"].startswith("bench-")
    ]
    if len(items) < options.count:
        return False
    for item in items:
        if (item.get("status") or {}).get("observedGeneration") != item["metadata"].get(
            "generation"
        ):
            return False
    for resource in (DEPLOYMENTS, SERVICES):
        children = await client.request("GET", resource.path(options.namespace), params=selector)
        names = {child["metadata"]["name"] for child in children.get("items", [])}
        if not {item["metadata"]["name"] for item in items} <= names:
            return False
    return True


# ---------------------------------------------------------------------------------------------
# The operator, in a child process
# ---------------------------------------------------------------------------------------------


def _operator_main(
    kubeconfig: str, namespace: str, workers: int, pipe: multiprocessing.connection.Connection
) -> None:
    """Child process: run the operator, report its counters every 100 ms until told to stop."""
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
    loop.add_reader(pipe.fileno(), stop.set)  # any message (or the parent's exit) stops it
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

    while not task.done():
        pipe.send(report())
        await asyncio.sleep(0.1)
    pipe.send({**report(), "exited": True})
    with contextlib.suppress(asyncio.CancelledError):
        await task


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
        self.latest: dict[str, Any] = {}

    def poll(self) -> dict[str, Any]:
        """The newest report (non-blocking)."""
        try:
            while self._pipe.poll():
                self.latest = self._pipe.recv()
        except EOFError:
            pass  # the child is gone; judged below
        if not self.process.is_alive() and not self.latest.get("exited"):
            raise RuntimeError(f"the operator process exited ({self.process.exitcode})")
        return self.latest

    async def wait(self, predicate: Any, timeout_s: float, what: str) -> dict[str, Any]:
        """Poll the reports until ``predicate(report)``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            report = self.poll()
            if report and predicate(report):
                return report
            await asyncio.sleep(0.05)
        raise TimeoutError(f"operator: {what} not reached in {timeout_s}s: {self.latest}")

    async def settled(self, timeout_s: float, quiet_s: float = 1.0) -> dict[str, Any]:
        """Wait until it has synced and its request count stopped moving for ``quiet_s``."""
        await self.wait(lambda r: r.get("ready"), timeout_s, "ready")
        last, since = -1, time.monotonic()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            report = self.poll()
            idle = report["depth"] == 0 and report["active"] == 0
            if report["requests"] != last or not idle:
                last, since = report["requests"], time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return report
            await asyncio.sleep(0.05)
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
        with contextlib.suppress(BrokenPipeError):
            self._pipe.send("stop")
        final = await self.wait(lambda r: r.get("exited"), 30, "exit")
        await asyncio.to_thread(self.process.join, 10)
        return final


# ---------------------------------------------------------------------------------------------
# The benchmark
# ---------------------------------------------------------------------------------------------


async def run_benchmark(options: Options) -> dict[str, Any]:
    """Run it; the figures as a dict."""
    path = kubeconfig_path(options)
    context = current_context(path)
    check_context(context, options.allow_context)
    info = login_from(path)
    client = Connection(lambda: info, request_timeout_s=60)
    await client.open()
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
        first = OperatorProcess(path, options)
        try:
            baseline = await first.settled(options.timeout_s)
            started = time.monotonic()
            await create_all(client, options)
            created = time.monotonic()
            deadline = started + options.timeout_s
            while not await converged(client, options):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{options.count} objects did not converge in time")
                await asyncio.sleep(0.25)
            converge_s = time.monotonic() - started
            at_convergence = await first.settled(options.timeout_s)
            peak_rss = first.peak_rss_mib()
        finally:
            await first.stop()

        second = OperatorProcess(path, options)
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
            with contextlib.suppress(ApiError):
                await client.request("DELETE", NAMESPACES.path(name=options.namespace))
        await client.close()

    requests = at_convergence["requests"] - baseline["requests"]
    writes = at_convergence["writes"] - baseline["writes"]
    resume_writes = resumed["writes"]
    results: dict[str, Any] = {
        "benchmark": "operator_scale",
        "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "context": context,
        "server": info.server,
        "count": options.count,
        "workers": options.workers,
        "create_seconds": round(created - started, 3),
        "converge_seconds": round(converge_s, 3),
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
    results["meets_targets"] = {
        "converge_seconds": converge_s
        <= TARGETS["converge_seconds_per_1000"] * options.count / 1000,
        "requests_per_object": results["requests_per_object"] <= TARGETS["requests_per_object"],
        "resume_writes": resume_writes == TARGETS["resume_writes"],
        "peak_rss_mib": peak_rss is None or peak_rss <= TARGETS["peak_rss_mib"],
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
        return f"  {label:<20}{value:>12}  [{'ok' if met[key] else 'MISSED'}]"

    rss = results["peak_rss_mib"]
    return "\n".join(
        [
            f"operator scale: {results['count']} ModelDeployments on {results['context']}",
            line("converged in", f"{results['converge_seconds']:.2f} s", "converge_seconds"),
            line(
                "requests per object",
                f"{results['requests_per_object']:.2f}",
                "requests_per_object",
            )
            + f"  (writes per object {results['writes_per_object']:.2f})",
            line("writes on resume", str(results["resume_writes"]), "resume_writes"),
            line("peak RSS", f"{rss:.1f} MiB" if rss is not None else "n/a", "peak_rss_mib"),
        ]
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    options = parse_args(argv)
    results = asyncio.run(run_benchmark(options))
    print(report(results))
    output = options.output or RESULTS / f"operator-scale-{options.count}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {output}")
    return 0 if all(results["meets_targets"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())

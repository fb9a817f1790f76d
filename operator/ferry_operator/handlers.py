"""Kopf wiring: watch, index, and hand every change to one level-based reconcile.

Every handler is a coroutine: Kopf runs plain functions in a thread pool, and these only touch
in-memory state owned by the event loop.

Kopf does what it is best at: watching (lists, watch streams, reconnects, 410 re-lists),
indexing (in-memory caches with no extra API requests), peering and the liveness endpoint.
It does not run Ferry's logic through its change-detection handlers (``on.create`` /
``on.update`` / ``on.resume``): those store a diff base and progress in annotations on the
object (writes), cannot be triggered by the children, and would run beside a second path for
child events. Instead every watch event, for a ModelDeployment, one of its children or one of
its pods, only *enqueues* the owning ModelDeployment; a :class:`~ferry_operator.workqueue.
WorkQueue` runs :func:`~ferry_operator.reconcile.reconcile` once per key at a time, coalescing
bursts, with per-object exponential backoff (and the server's ``Retry-After``) after errors.
So Kopf never writes to a ModelDeployment: nothing of Kopf's lands in its annotations, its status
or on the children (the storages are still pointed at ``serving.ferry.dev/`` annotations, should
a handler that needs them ever be added).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import random
import socket
import sys
from collections.abc import Callable, Mapping
from typing import Any

import kopf

from ferry_operator import constants
from ferry_operator.cluster import Cluster, Connection, Login, default_login
from ferry_operator.errors import ApiError, Backoff
from ferry_operator.observed import (
    ClusterView,
    OwnerKey,
    instance_key,
    object_key,
    owner_key,
    trim_child,
    trim_owner,
    trim_pod,
)
from ferry_operator.probes import HttpProber
from ferry_operator.reconcile import Memo, RepairGuard, RetryLater, reconcile
from ferry_operator.render import CHILD_KINDS, RenderOptions
from ferry_operator.render.names import label_value
from ferry_operator.settings import OperatorSettings
from ferry_operator.workqueue import WorkQueue

logger = logging.getLogger(__name__)

MANAGED_LABELS = {constants.LABEL_MANAGED_BY: constants.MANAGED_BY}
MANAGED_SELECTOR = f"{constants.LABEL_MANAGED_BY}={constants.MANAGED_BY}"
OWNERS_INDEX = "ferry_owners"
OWNER_LABELS_INDEX = "ferry_owner_labels"
PODS_INDEX = "ferry_pods"


def child_index_id(plural: str) -> str:
    """Kopf index id (and handler kwarg name) of one child kind."""
    return f"ferry_children_{plural}"


def utc_now() -> str:
    """RFC 3339 UTC timestamp with second precision (as Kubernetes writes them)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def instance_name() -> str:
    """This replica's identity: the pod name when in a cluster, else the host name."""
    return os.environ.get("POD_ID") or os.environ.get("POD_NAME") or socket.gethostname()


class Controller:
    """Ferry's state within one operator process: view, queue, writer, retry bookkeeping."""

    def __init__(
        self, settings: OperatorSettings, connection: Connection, *, identity: str
    ) -> None:
        self.settings = settings
        self.connection = connection
        self.cluster = Cluster(connection)
        self.view = ClusterView()
        self.options = RenderOptions(runtime_image=settings.runtime_image)
        self.backoff = Backoff(base_s=settings.retry_base_delay_s, max_s=settings.retry_max_delay_s)
        self.identity = identity
        self.failures: dict[OwnerKey, int] = {}
        self.guard = RepairGuard()
        self.memo = Memo()
        self.prober = HttpProber()
        self.queue: WorkQueue[OwnerKey] = WorkQueue(self.process, concurrency=settings.workers)
        self.writes = 0

    async def process(self, key: OwnerKey) -> float | None:
        """Reconcile ``key`` once; the delay before a retry, or ``None`` when done."""
        try:
            outcome = await reconcile(
                key,
                self.view,
                self.cluster,
                self.options,
                now=utc_now,
                instance=self.identity,
                guard=self.guard,
                memo=self.memo,
                prober=self.prober,
            )
        except RetryLater as refused:
            return self._retry(key, refused.cause, refused.blocked.message)
        except ApiError as error:
            return self._retry(key, error, str(error))
        self.failures.pop(key, None)
        self.writes += outcome.writes
        if outcome.applied or outcome.pruned:
            logger.info(
                "reconciled %s/%s: applied %s; pruned %s",
                *key,
                ", ".join(outcome.applied) or "nothing",
                ", ".join(outcome.pruned) or "nothing",
            )
        if outcome.blocked is not None and outcome.status_written:
            logger.warning("%s/%s: %s: %s", *key, outcome.blocked.reason, outcome.blocked.message)
        return outcome.requeue_after

    def _retry(self, key: OwnerKey, error: ApiError, message: str) -> float:
        attempt = self.failures.get(key, 0) + 1
        self.failures[key] = attempt
        delay = self.backoff.delay(error, attempt)
        logger.warning(
            "reconciling %s/%s failed (attempt %d), retrying in %.1fs: %s",
            *key,
            attempt,
            delay,
            message,
        )
        return delay

    # Routing of watch events to the owning ModelDeployment ------------------------------------

    def owner_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A ModelDeployment changed (or was listed)."""
        metadata = body.get("metadata") or {}
        key: OwnerKey = (metadata.get("namespace") or "", metadata.get("name") or "")
        gone = event_type == "DELETED"
        self.view.overlay.observed((constants.KIND, *key), metadata.get("resourceVersion"), gone)
        if gone:
            self.failures.pop(key, None)
        else:
            self.queue.add(key)

    def child_event(self, event_type: str | None, body: Mapping[str, Any]) -> None:
        """A child changed, appeared or disappeared: its owner takes another look."""
        metadata = body.get("metadata") or {}
        gone = event_type == "DELETED"
        self.view.overlay.observed(object_key(body), metadata.get("resourceVersion"), gone)
        self._enqueue_owner_of(body)

    def pod_event(self, body: Mapping[str, Any]) -> None:
        """A model pod changed: its ModelDeployment's status may change."""
        self._enqueue_owner_of(body)

    def _enqueue_owner_of(self, body: Mapping[str, Any]) -> None:
        key = owner_key(body)
        if key is None:
            instance = instance_key(body)
            key = self.view.owner_for_instance(instance) if instance is not None else None
        if key is not None and self.view.owner(key) is not None:
            self.queue.add(key)


def kopf_settings(settings: OperatorSettings) -> kopf.OperatorSettings:
    """Kopf's settings for Ferry (see the module docstring for why each is so)."""
    result = kopf.OperatorSettings()
    # Ferry posts its own Events (on transitions only); Kopf's per-handler events are off.
    result.posting.enabled = False
    # Kopf's bookkeeping, were any ever stored, goes under Ferry's own annotation prefix.
    prefix = constants.KOPF_ANNOTATIONS_PREFIX
    result.persistence.finalizer = f"{prefix}/kopf-finalizer"
    result.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=prefix)
    result.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=prefix, key="last-handled-configuration"
    )
    # Only Ferry's children and pods are watched, filtered by the API server.
    for kind in CHILD_KINDS:
        result.watching.label_selectors[kind.group, kind.version, kind.plural] = MANAGED_SELECTOR
    result.watching.label_selectors["", "v1", "pods"] = MANAGED_SELECTOR
    result.watching.connect_timeout = 10.0
    result.networking.request_timeout = settings.request_timeout_s
    result.networking.connect_timeout = 10.0
    # Peering: replicas sharing the peering object elect the one with the highest priority.
    result.peering.name = settings.peering_name
    result.peering.standalone = settings.standalone
    result.peering.mandatory = not settings.standalone
    result.peering.clusterwide = settings.clusterwide
    result.peering.priority = (
        settings.peering_priority
        if settings.peering_priority is not None
        else random.randint(1, 1_000_000)
    )
    return result


def build_registry(controller: Controller) -> kopf.OperatorRegistry:
    """A fresh Kopf registry with Ferry's handlers bound to ``controller``."""
    registry = kopf.OperatorRegistry()
    group, version, plural = constants.GROUP, constants.VERSION, constants.PLURAL

    @kopf.on.login(registry=registry)
    async def login(**_: Any) -> kopf.AiohttpSession:
        return controller.connection.kopf_session()

    @kopf.on.startup(registry=registry)
    async def startup(**kwargs: Any) -> None:
        controller.view.bind(
            owners=kwargs[OWNERS_INDEX],
            owner_labels=kwargs[OWNER_LABELS_INDEX],
            children=[kwargs[child_index_id(kind.plural)] for kind in CHILD_KINDS],
            pods=kwargs[PODS_INDEX],
        )
        controller.queue.start()

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await controller.queue.stop()
        await controller.prober.close()
        await controller.connection.close()  # Kopf's streams are stopped by now

    @kopf.on.probe(id="queue", registry=registry)
    async def queue_probe(**_: Any) -> dict[str, int]:
        return {
            "queued": controller.queue.depth,
            "active": controller.queue.active,
            "failing": len(controller.failures),
            "api_requests": controller.connection.stats.total,
        }

    @kopf.index(group, version, plural, id=OWNERS_INDEX, registry=registry)
    async def index_owner(
        namespace: str | None, name: str, body: kopf.Body, **_: Any
    ) -> dict[Any, Any]:
        return {(namespace, name): trim_owner(body)}

    @kopf.index(group, version, plural, id=OWNER_LABELS_INDEX, registry=registry)
    async def index_owner_label(namespace: str | None, name: str, **_: Any) -> dict[Any, Any]:
        return {(namespace, label_value(name)): name}

    @kopf.on.event(group, version, plural, registry=registry)
    async def owner_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.owner_event(type, body)

    for kind in CHILD_KINDS:
        _register_child(registry, controller, kind.group, kind.version, kind.plural)

    @kopf.index("", "v1", "pods", labels=MANAGED_LABELS, id=PODS_INDEX, registry=registry)
    async def index_pod(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
        key = instance_key(body)
        return {key: trim_pod(body)} if key is not None else None

    @kopf.on.event("", "v1", "pods", labels=MANAGED_LABELS, registry=registry)
    async def pod_changed(body: kopf.Body, **_: Any) -> None:
        controller.pod_event(body)

    return registry


def _register_child(
    registry: kopf.OperatorRegistry,
    controller: Controller,
    group: str,
    version: str,
    plural: str,
) -> None:
    async def index_child(body: kopf.Body, **_: Any) -> dict[Any, Any] | None:
        key = instance_key(body)
        return {key: trim_child(body)} if key is not None else None

    async def child_changed(type: str | None, body: kopf.Body, **_: Any) -> None:
        controller.child_event(type, body)

    kopf.index(
        group, version, plural, labels=MANAGED_LABELS, id=child_index_id(plural), registry=registry
    )(index_child)
    kopf.on.event(
        group, version, plural, labels=MANAGED_LABELS, id=f"{plural}_changed", registry=registry
    )(child_changed)


class Operator:
    """One operator process: a connection, a controller, and Kopf running them."""

    def __init__(
        self,
        settings: OperatorSettings,
        *,
        login: Login = default_login,
        identity: str | None = None,
    ) -> None:
        self.settings = settings
        self.identity = identity or instance_name()
        self.connection = Connection(login, request_timeout_s=settings.request_timeout_s)
        self.controller = Controller(settings, self.connection, identity=self.identity)

    async def run(
        self,
        *,
        stop_flag: asyncio.Event | None = None,
        ready_flag: asyncio.Event | None = None,
    ) -> None:
        """Run until ``stop_flag`` is set or SIGINT/SIGTERM arrives."""
        await self.connection.open()
        try:
            settings = self.settings = await self._settle_peering(self.settings)
            await kopf.operator(
                registry=build_registry(self.controller),
                settings=kopf_settings(settings),
                clusterwide=settings.clusterwide,
                namespaces=list(settings.watch_namespaces),
                liveness_endpoint=settings.liveness_endpoint,
                stop_flag=stop_flag,
                ready_flag=ready_flag,
            )
        finally:
            await self.controller.queue.stop()
            await self.controller.prober.close()
            await self.connection.close()

    async def _settle_peering(self, settings: OperatorSettings) -> OperatorSettings:
        """``settings`` as they run: with peering when its object exists or could be created,
        standalone (with a loud warning) when Kopf's peering CRD is missing and peering was not
        required. A missing CRD with ``require_peering``, or any other refusal, stops the start."""
        if settings.standalone:
            return settings
        namespaces = None if settings.clusterwide else settings.watch_namespaces
        try:
            await self.controller.cluster.ensure_peering(settings.peering_name, namespaces)
        except ApiError as error:
            if error.not_found and not settings.require_peering:
                logger.warning(
                    "NO PEERING: Kopf's peering CRD (kopf.dev) is not installed, so this operator "
                    "runs STANDALONE. That is safe for one replica only: two operators without "
                    "peering would both act. Install the CRD (the Helm chart does with "
                    "ha.enabled) for high availability, or pass --standalone to silence this; "
                    "--require-peering refuses to start instead."
                )
                return settings.model_copy(update={"standalone": True})
            hint = (
                "install Kopf's peering CRD (the Helm chart does with ha.enabled) or run "
                "without --require-peering"
                if error.not_found
                else "check the operator's RBAC"
            )
            raise ApiError(
                error.status, f"cannot create the peering object ({hint}): {error.message}"
            ) from error
        return settings


def configure_logging(settings: OperatorSettings) -> None:
    """Log lines (or JSON objects) at the configured level, Kopf's included."""
    kopf.configure(
        debug=settings.log_level == "debug",
        quiet=settings.log_level in {"warning", "error"},
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel(settings.log_level.upper())


def run_operator(
    namespaces: list[str] | None,
    standalone: bool,
    liveness: str | None,
    *,
    require_peering: bool = False,
    load_settings: Callable[[], OperatorSettings] = OperatorSettings,
) -> int:
    """``ferry-operator run``: load the settings, then run until stopped. Returns the exit code."""
    try:
        settings = load_settings().with_overrides(
            namespaces=namespaces,
            standalone=standalone,
            require_peering=require_peering,
            liveness=liveness,
        )
    except ValueError as error:  # pydantic's ValidationError: contradictory settings
        print(f"ferry-operator: invalid settings: {error}", file=sys.stderr)
        return 2
    configure_logging(settings)
    logger.info(
        "starting: %s, runtime image %s, %s",
        "all namespaces" if settings.clusterwide else ", ".join(settings.watch_namespaces),
        settings.runtime_image,
        "standalone"
        if settings.standalone
        else f"peering {settings.peering_name!r}"
        + ("" if settings.require_peering else " (standalone if its CRD is missing)"),
    )
    try:
        asyncio.run(Operator(settings).run())
    except kopf.LoginError as error:
        logger.error("cannot log in to the API server: %s", error)
        return 1
    except ApiError as error:
        logger.error("cannot start: %s", error)
        return 1
    return 0

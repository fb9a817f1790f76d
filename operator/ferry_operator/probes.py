"""Reading the runtime pods: their Prometheus metrics and their model metadata, by pod IP.

The only module that talks to model pods (``cluster.py`` talks to the API server). What it reads
feeds the rollout planner (:mod:`ferry_operator.rollout`): a canary's request outcomes and
latency, and each revision's model signature. Every read is bounded in time and size, and a
pod that does not answer is simply left out (the planner waits rather than guesses).

The metrics text is parsed with prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from ferry_operator import constants
from ferry_operator.analysis import (
    SERVER_ERROR_OUTCOMES,
    UNCOUNTED_OUTCOMES,
    Figures,
    Signature,
)
from ferry_operator.rollout_observed import ProbeRequest, Probes

logger = logging.getLogger(__name__)

REQUESTS_METRIC = "ferry_requests"
DURATION_METRIC = "ferry_request_duration_seconds"
METRICS_PATH = "/metrics"
MAX_BODY_BYTES = 1 << 20
DEFAULT_PORT = constants.DEFAULT_HTTP_PORT


def parse_figures(text: str) -> Figures:
    """Request outcomes and the latency histogram (all protocols) from one pod's metrics."""
    requests = errors = 0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == REQUESTS_METRIC:
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                outcome = sample.labels.get("outcome", "")
                if outcome in UNCOUNTED_OUTCOMES:
                    continue
                requests += int(sample.value)
                if outcome in SERVER_ERROR_OUTCOMES:
                    errors += int(sample.value)
        elif family.name == DURATION_METRIC:
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    bound = float(sample.labels["le"])
                    buckets[bound] = buckets.get(bound, 0.0) + sample.value
    return Figures(requests=requests, errors=errors, buckets=tuple(sorted(buckets.items())))


def _ready(pod: Mapping[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in (pod.get("status") or {}).get("conditions") or ()
    )


def serving_pods(pods: Sequence[Mapping[str, Any]], revision: str) -> list[str]:
    """Pod IPs of the ready, not terminating pods of ``revision``."""
    found = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        if (metadata.get("labels") or {}).get(constants.LABEL_REVISION) != revision:
            continue
        if metadata.get("deletionTimestamp") or not _ready(pod):
            continue
        ip = (pod.get("status") or {}).get("podIP")
        if ip:
            found.append(str(ip))
    return sorted(found)


class Prober(Protocol):
    """Reads what the planner asks for (:class:`HttpProber`; a fake in tests)."""

    async def probe(
        self, key: tuple[str, str], request: ProbeRequest, pods: Sequence[Mapping[str, Any]]
    ) -> Probes:
        """Figures and signatures for ``request``, from the pods of ModelDeployment ``key``."""


class HttpProber:
    """Plain HTTP to pod IPs (the runtime serves /metrics and /v2 on its HTTP port)."""

    def __init__(self, timeout_s: float = 3.0, cache_size: int = 4096) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._signatures: dict[tuple[str, str, str], Signature] = {}
        self._cache_size = cache_size

    @property
    def session(self) -> aiohttp.ClientSession:
        """One session for every pod read (opened on first use)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout, trust_env=False)
        return self._session

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None and not self._session.closed:
            await self._session.close()

    async def _get(self, url: str, *, as_json: bool) -> Any:
        async with self.session.get(url) as response:
            if response.status != 200:
                return None
            body = await response.content.read(MAX_BODY_BYTES + 1)
            if len(body) > MAX_BODY_BYTES:
                return None
            if as_json:
                return json.loads(body)
            return body.decode("utf-8", errors="replace")

    async def _figures(self, ip: str, port: int) -> Figures | None:
        try:
            text = await self._get(f"http://{ip}:{port}{METRICS_PATH}", as_json=False)
            return parse_figures(text) if isinstance(text, str) else None
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            logger.info("metrics of pod %s unreadable: %s", ip, error)
            return None

    async def _signature(self, ip: str, port: int, model: str) -> Signature | None:
        try:
            document = await self._get(f"http://{ip}:{port}/v2/models/{model}", as_json=True)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            logger.info("model metadata of pod %s unreadable: %s", ip, error)
            return None
        return Signature.from_metadata(document) if isinstance(document, Mapping) else None

    async def probe(
        self, key: tuple[str, str], request: ProbeRequest, pods: Sequence[Mapping[str, Any]]
    ) -> Probes:
        """Figures summed over every ready pod of the revision (a pod that does not answer
        makes the figures unknown: judging on part of the pods could pass a bad canary);
        signatures from the first ready pod of each revision, remembered per revision."""
        figures: Figures | None = None
        if request.figures_of is not None:
            _, port = request.targets.get(request.figures_of, ("", DEFAULT_PORT))
            ips = serving_pods(pods, request.figures_of)
            read = await asyncio.gather(*(self._figures(ip, port) for ip in ips))
            if ips and all(item is not None for item in read):
                figures = sum((item for item in read if item is not None), Figures())
        signatures: dict[str, Signature] = {}
        for revision in request.signatures_of:
            cache_key = (*key, revision)
            known = self._signatures.get(cache_key)
            model, port = request.targets.get(revision, ("", DEFAULT_PORT))
            if known is None and model:
                for ip in serving_pods(pods, revision)[:2]:
                    known = await self._signature(ip, port, model)
                    if known is not None:
                        if len(self._signatures) >= self._cache_size:
                            self._signatures.clear()
                        self._signatures[cache_key] = known
                        break
            if known is not None:
                signatures[revision] = known
        return Probes(figures=figures, signatures=signatures)

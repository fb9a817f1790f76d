"""The spec as the runtime's ``FERRY_RUNTIME_*`` environment (docs/contracts.md)."""

from __future__ import annotations

import json
from typing import Any

from ferry_operator import constants
from ferry_operator.render.options import RenderOptions
from ferry_operator.spec import ModelDeployment

ENV_PREFIX = "FERRY_RUNTIME_"


def _flag(value: bool) -> str:
    return "true" if value else "false"


def runtime_settings(md: ModelDeployment, options: RenderOptions) -> dict[str, str]:
    """Runtime settings by variable name, every value a string as env values must be."""
    spec = md.spec
    settings = {
        "MODEL_DIR": constants.MODEL_MOUNT_PATH,
        "MODEL_NAME": md.served_name,
        "MODEL_VERSION": spec.model.version,
        "MODEL_FORMAT": spec.model.format,
        "DEVICE": spec.runtime.device,
        "THREADS": str(spec.runtime.threads),
        "HTTP_PORT": str(spec.runtime.protocols.http_port),
        "GRPC_PORT": str(spec.runtime.protocols.grpc_port),
        "BATCHING_ENABLED": _flag(spec.batching.enabled),
        "MAX_BATCH_SIZE": str(spec.batching.max_batch_size),
        "MAX_QUEUE_DELAY_MS": str(spec.batching.max_queue_delay_ms),
        # Sorted and unique: the runtime refuses a repeated size.
        "PREFERRED_BATCH_SIZES": json.dumps(sorted(set(spec.batching.preferred_batch_sizes))),
        "MAX_QUEUE_SIZE": str(spec.batching.max_queue_size),
        "DRAIN_TIMEOUT_S": str(options.drain_timeout_seconds),
    }
    if spec.model.sha256 is not None:
        settings["MODEL_SHA256"] = spec.model.sha256
    if spec.runtime.frontend_processes:
        # only when set: the runtime's default is 0, and an always-present variable would
        # change (and so restart) every existing model's pods on an operator upgrade
        settings["FRONTEND_PROCESSES"] = str(spec.runtime.frontend_processes)
    return {f"{ENV_PREFIX}{key}": value for key, value in settings.items()}


def _env_list(values: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": name, "value": values[name]} for name in sorted(values)]


def server_env(md: ModelDeployment, options: RenderOptions) -> list[dict[str, Any]]:
    """Environment of the model server container.

    Ferry's variables come first, sorted by name; ``spec.runtime.env`` follows in the user's
    order (order matters for ``$(VAR)`` references). ``HOME`` points at the writable /tmp
    because the root filesystem is read-only; a user-given ``HOME`` wins. Names stay unique,
    as server-side apply requires of a list keyed by name.
    """
    user_env = [var.model_dump(by_alias=True, exclude_none=True) for var in md.spec.runtime.env]
    user_names = {var["name"] for var in user_env}
    defaults = {"HOME": "/tmp"}
    ferry = {
        **{k: v for k, v in defaults.items() if k not in user_names},
        **runtime_settings(md, options),
    }
    return [*_env_list(ferry), *_dedupe_last_wins(user_env)]


def fetch_env() -> list[dict[str, Any]]:
    """Environment of the model fetch init container. Credentials come by ``envFrom``; the
    expected digest is a ``--sha256`` argument of ``ferry-runtime fetch``."""
    return _env_list({"HOME": "/tmp"})


def _dedupe_last_wins(env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep one entry per name (the last, as the kubelet would), at its first position."""
    last: dict[str, dict[str, Any]] = {}
    for var in env:
        last[var["name"]] = var
    seen: set[str] = set()
    result = []
    for var in env:
        if var["name"] not in seen:
            seen.add(var["name"])
            result.append(last[var["name"]])
    return result

"""How a model that cannot be loaded is reported to Kubernetes (docs/contracts.md).

The server exits with :data:`EXIT_MODEL_LOAD_FAILED` and writes the loader's message to the
container's termination message file, so the kubelet shows it in the pod status
(``lastState.terminated.message``) and the operator reports ``Ready=False`` with reason
``ModelLoadFailed`` and that message, instead of a bare crash loop.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

EXIT_MODEL_LOAD_FAILED = 3
"""Exit status of ``ferry-runtime serve`` when the model cannot be loaded or warmed up."""
TERMINATION_LOG_ENV = "FERRY_RUNTIME_TERMINATION_LOG"
DEFAULT_TERMINATION_LOG = Path("/dev/termination-log")
MAX_TERMINATION_MESSAGE = 4096
"""The kubelet keeps at most 4096 bytes of a termination message."""

log = logging.getLogger(__name__)


def report_load_failure(message: str) -> int:
    """Write ``message`` to the termination log when there is one; return the exit status."""
    path = Path(os.environ.get(TERMINATION_LOG_ENV) or DEFAULT_TERMINATION_LOG)
    data = f"model load failed: {message}".encode()[:MAX_TERMINATION_MESSAGE]
    try:
        # Only an existing file (the kubelet mounts one in every container): never create one.
        with path.open("r+b") as out:
            out.truncate(0)
            out.write(data)
    except OSError as error:
        log.debug("no termination log at %s (%s); the message is in the log only", path, error)
    return EXIT_MODEL_LOAD_FAILED

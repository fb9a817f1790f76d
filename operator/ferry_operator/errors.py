"""The operator's errors and the one place that decides how each is retried.

Two families:

* :class:`ApiError`: the API server (or the connection to it) failed a request. Conflicts (409),
  throttling (429, with ``Retry-After``), server errors (5xx) and broken connections are
  *transient*: the reconcile is retried with exponential backoff. Other refusals (400, 403, 404,
  422: a webhook, a quota, missing RBAC) will not pass by retrying at once; they are reported on
  the ModelDeployment and retried slowly, since the cause lies outside the spec.
* :class:`Blocked`: the spec itself cannot be honoured (it passed the CRD's schema, but parsing
  or rendering refused it). It is reported once as ``Ready=False`` plus an Event and never
  retried: the next change of the object brings the next attempt.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
"""Statuses below 500 that a retry may clear (timeouts, conflicts, throttling)."""


class ApiError(Exception):
    """A failed API request: ``status`` 0 means no HTTP answer (connection, timeout)."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        reason: str = "",
        method: str = "",
        path: str = "",
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.reason = reason
        self.method = method
        self.path = path
        self.retry_after = retry_after
        self.message = message
        where = f" ({method} {path})" if method else ""
        super().__init__(f"{status} {reason or 'error'}: {message}{where}")

    @property
    def transient(self) -> bool:
        """Whether retrying soon may succeed (409, 429, 5xx, no answer at all)."""
        return self.status == 0 or self.status >= 500 or self.status in TRANSIENT_STATUSES

    @property
    def not_found(self) -> bool:
        """404: the object (or the resource) is not there."""
        return self.status == 404


@dataclass(frozen=True)
class Blocked:
    """Why the operator will not act on this generation of the spec."""

    reason: str
    """CamelCase condition reason, e.g. ``InvalidSpec`` or ``ApplyFailed``."""

    message: str
    """What to fix, naming the field where possible."""

    retry: bool = False
    """Whether the reconcile is retried (slowly) although the spec did not change: true for
    refusals by the API server, whose cause may be fixed outside the spec."""


@dataclass(frozen=True)
class Backoff:
    """Retry delays: exponential with jitter, never shorter than a server's ``Retry-After``."""

    base_s: float = 1.0
    max_s: float = 300.0
    refused_min_s: float = 30.0
    """First delay after a non-transient refusal (400/403/404/422)."""

    def delay(self, error: BaseException, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based) after ``error``."""
        exponent = max(0, attempt - 1)
        delay = min(self.max_s, self.base_s * (2.0**exponent))
        if isinstance(error, ApiError) and not error.transient:
            delay = max(delay, min(self.max_s, self.refused_min_s * (2.0**exponent)))
        # Up to 20% of jitter spreads the retries of many objects failing together.
        delay = min(self.max_s, delay * (1.0 + random.random() * 0.2))
        if isinstance(error, ApiError) and error.retry_after is not None:
            delay = max(delay, error.retry_after)
        return delay

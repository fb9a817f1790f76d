"""Bounded retries with exponential backoff and full jitter for transient failures."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class TransientError(Exception):
    """A failure worth retrying (connection reset, timeout, 5xx, 429)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a transient failure is retried."""

    attempts: int = 5
    """Total attempts, the first one included."""
    base_delay_s: float = 0.5
    """Backoff before the second attempt; doubles after each failure."""
    max_delay_s: float = 10.0
    """Upper bound of one backoff."""

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("delays must not be negative")

    def delay_before(self, attempt: int) -> float:
        """Upper bound of the pause before ``attempt`` (2, 3, ...)."""
        return min(self.max_delay_s, self.base_delay_s * 2.0 ** max(0, attempt - 2))


def with_retries(
    operation: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run ``operation``; retry it on ``TransientError`` until the policy's attempts run out.

    The last ``TransientError`` is re-raised; any other exception propagates at once.
    """
    for attempt in range(1, policy.attempts + 1):
        try:
            return operation()
        except TransientError as error:
            if attempt == policy.attempts:
                raise
            pause = random.uniform(0, policy.delay_before(attempt + 1))
            log.warning(
                "%s failed (attempt %d/%d): %s; retrying in %.2fs",
                what,
                attempt,
                policy.attempts,
                error,
                pause,
            )
            sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover

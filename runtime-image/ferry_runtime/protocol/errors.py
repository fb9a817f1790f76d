"""Errors that carry their protocol status, and the one table that maps them.

Every error a client can cause or see is one of these. ``status_of`` gives its HTTP status and
gRPC status-code name (the name of a ``grpc.StatusCode`` member, so this module needs no grpc);
REST answers ``{"error": message}`` with the status, gRPC aborts with the code and message.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MAX_MESSAGE_CHARS = 1024
"""Longest error message sent to a client: far below gRPC's 8 KiB metadata limit, so the real
status always reaches the client (a longer one would arrive as RESOURCE_EXHAUSTED)."""

MAX_ECHO_CHARS = 64
"""Longest piece of client input (a name, a shape) quoted inside an error message."""


def clip(value: object, limit: int = MAX_ECHO_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters: client input quoted in a message."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}…({len(value) - limit} more chars)"
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text) - limit} more chars)"


def clip_list(values: Sequence[object], limit: int = 8) -> str:
    """A list of client values, at most ``limit`` entries and each entry clipped."""
    shown = ", ".join(clip(value) for value in values[:limit])
    more = f", …({len(values) - limit} more)" if len(values) > limit else ""
    return f"[{shown}{more}]"


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters (the last line of defence for every error)."""
    if len(message) <= limit:
        return message
    return f"{message[: limit - 24]}… ({len(message) - limit + 24} chars cut)"


class InferenceServerError(Exception):
    """Base of all errors that are reported to the client; ``str(err)`` is the message."""


class InvalidInputError(InferenceServerError):
    """The request is malformed or does not match the model (names, datatypes, shapes)."""


class NotFoundError(InferenceServerError):
    """Unknown model or model version."""


class PayloadTooLargeError(InferenceServerError):
    """The request body is larger than ``FERRY_RUNTIME_MAX_REQUEST_BYTES``."""


class RequestTimeoutError(InferenceServerError):
    """The client did not send the whole request in time (slow or stalled upload)."""


class UnavailableError(InferenceServerError):
    """The model is not ready, or the server is shutting down."""


class QueueFullError(UnavailableError):
    """The batch queue holds ``FERRY_RUNTIME_MAX_QUEUE_SIZE`` requests; retry later."""


class UnsupportedError(InferenceServerError):
    """A protocol feature this server does not implement."""


class InferenceFailedError(InferenceServerError):
    """The model raised while running a batch; every request of that batch gets this."""


@dataclass(frozen=True, slots=True)
class ErrorStatus:
    """The status an error is reported with on each protocol."""

    http: int
    grpc: str


ERROR_TABLE: dict[type[InferenceServerError], ErrorStatus] = {
    InvalidInputError: ErrorStatus(400, "INVALID_ARGUMENT"),
    NotFoundError: ErrorStatus(404, "NOT_FOUND"),
    PayloadTooLargeError: ErrorStatus(413, "RESOURCE_EXHAUSTED"),
    RequestTimeoutError: ErrorStatus(408, "DEADLINE_EXCEEDED"),
    QueueFullError: ErrorStatus(503, "UNAVAILABLE"),
    UnavailableError: ErrorStatus(503, "UNAVAILABLE"),
    UnsupportedError: ErrorStatus(400, "UNIMPLEMENTED"),
    InferenceFailedError: ErrorStatus(500, "INTERNAL"),
    InferenceServerError: ErrorStatus(500, "INTERNAL"),
}
"""Error class → status. Subclasses not listed take their nearest listed base's status."""


def status_of(error: InferenceServerError) -> ErrorStatus:
    """The status ``error`` is reported with."""
    for cls in type(error).__mro__:
        found = ERROR_TABLE.get(cls)
        if found is not None:
            return found
    return ERROR_TABLE[InferenceServerError]  # pragma: no cover - the base is always listed


def message_of(error: BaseException) -> str:
    """The client-facing message of ``error``, bounded in length."""
    return bounded(str(error))


def outcome_of(error: BaseException) -> str:
    """A short label for metrics: ``invalid``, ``not_found``, ``too_large``, ... ."""
    for cls, label in _OUTCOMES:
        if isinstance(error, cls):
            return label
    return "error"


_OUTCOMES: tuple[tuple[type[BaseException], str], ...] = (
    (InvalidInputError, "invalid"),
    (NotFoundError, "not_found"),
    (PayloadTooLargeError, "too_large"),
    (RequestTimeoutError, "timeout"),
    (QueueFullError, "queue_full"),
    (UnavailableError, "unavailable"),
    (UnsupportedError, "unsupported"),
    (InferenceFailedError, "failed"),
)

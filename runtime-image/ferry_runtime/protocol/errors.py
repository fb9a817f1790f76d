"""Errors that carry their protocol status, and the one table that maps them.

Every error a client can cause or see is one of these. ``status_of`` gives its HTTP status and
gRPC status-code name (the name of a ``grpc.StatusCode`` member, so this module needs no grpc);
REST answers ``{"error": message}`` with the status, gRPC aborts with the code and message.
"""

from __future__ import annotations

from dataclasses import dataclass


class InferenceServerError(Exception):
    """Base of all errors that are reported to the client; ``str(err)`` is the message."""


class InvalidInputError(InferenceServerError):
    """The request is malformed or does not match the model (names, datatypes, shapes)."""


class NotFoundError(InferenceServerError):
    """Unknown model or model version."""


class PayloadTooLargeError(InferenceServerError):
    """The request body is larger than ``FERRY_RUNTIME_MAX_REQUEST_BYTES``."""


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
    (QueueFullError, "queue_full"),
    (UnavailableError, "unavailable"),
    (UnsupportedError, "unsupported"),
    (InferenceFailedError, "failed"),
)

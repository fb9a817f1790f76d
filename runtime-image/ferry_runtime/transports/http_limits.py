"""HTTP/1.1 connection limits on uvicorn's httptools protocol.

uvicorn's httptools protocol (the fast one) bounds neither the request head nor the time a
client may take to send it, and its graceful shutdown waits for a request whose body is still
being uploaded. This subclass adds, per connection:

- header size and count: the request line plus headers beyond ``max_header_bytes``, or more than
  ``max_header_count`` headers, answer ``431`` and close the connection;
- read deadlines: the head must arrive within ``header_timeout_s`` of the connection's start or
  the previous response, the body within ``body_timeout_s`` of the head; a late request answers
  ``408`` (an idle connection is just closed);
- drain: on shutdown a connection whose request body has not fully arrived carries no accepted
  request and is closed at once, so one stalled upload cannot hold the drain to its timeout.

Everything else (parsing, keep-alive, pipelining, flow control) is uvicorn's. The counting runs
in the parser callbacks uvicorn already has, one comparison per header.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """Per-connection limits (from the runtime settings)."""

    max_header_bytes: int
    max_header_count: int
    header_timeout_s: float
    body_timeout_s: float


class _HeadTooLargeError(Exception):
    """Raised in a parser callback to stop parsing a head over the limits."""


def _plain_response(status: bytes, message: str) -> bytes:
    body = b'{"error":"' + message.encode() + b'"}'
    return b"".join(
        (
            b"HTTP/1.1 ",
            status,
            b"\r\ncontent-type: application/json\r\ncontent-length: ",
            str(len(body)).encode(),
            b"\r\nconnection: close\r\n\r\n",
            body,
        )
    )


HEAD_TOO_LARGE = _plain_response(b"431 Request Header Fields Too Large", "request head too large")
REQUEST_TIMEOUT = _plain_response(b"408 Request Timeout", "request not received in time")


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with head limits, read deadlines and an upload-aware drain."""

    limits: ClassVar[HttpLimits]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_bytes = 0
        self._head_too_large = False
        self._started_request = False
        self._due: float | None = None
        """When the head or body now awaited must have arrived (None: nothing awaited)."""
        self._timer: asyncio.TimerHandle | None = None

    # ---- deadlines -------------------------------------------------------------------------
    # One timer per connection, not one per request: phases only move ``_due``; the timer,
    # when it fires, closes the connection if ``_due`` has passed, else re-arms for it.

    def _await_within(self, seconds: float) -> None:
        self._due = self.loop.time() + seconds
        if self._timer is None:
            self._timer = self.loop.call_at(self._due, self._check_deadline)

    def _check_deadline(self) -> None:
        self._timer = None
        due = self._due
        transport = self.transport
        if due is None or transport is None or transport.is_closing():
            return
        if self.loop.time() < due:
            self._timer = self.loop.call_at(due, self._check_deadline)
            return
        cycle = self.cycle
        answering = cycle is not None and cycle.response_started and not cycle.response_complete
        if self._started_request and not answering:
            transport.write(REQUEST_TIMEOUT)
        transport.close()

    # ---- uvicorn protocol hooks ------------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._await_within(self.limits.header_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._due = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        if self._head_too_large:
            self.transport.write(HEAD_TOO_LARGE)
            self.transport.close()
            return
        super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._started_request = True

    def on_url(self, url: bytes) -> None:
        self._head_bytes += len(url)
        if self._head_bytes > self.limits.max_header_bytes:
            self._head_too_large = True
            raise _HeadTooLargeError
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # counted inline (a call per header is the hot path): size, then count
        self._head_bytes += len(name) + len(value) + 4
        limits = self.limits
        if (
            self._head_bytes > limits.max_header_bytes
            or len(self.headers) >= limits.max_header_count
        ):
            self._head_too_large = True
            raise _HeadTooLargeError
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._await_within(self.limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._due = None
        self._started_request = False
        super().on_message_complete()
        if self.cycle is not None and self.cycle.response_complete:  # answered before the body
            self._await_within(self.limits.header_timeout_s)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._started_request and not self.transport.is_closing():
            self._await_within(self.limits.header_timeout_s)

    def shutdown(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete and cycle.more_body:
            self.transport.close()  # still uploading: no request of this connection was accepted
            return
        super().shutdown()


def limited_protocol(limits: HttpLimits) -> type[LimitedHttpProtocol]:
    """The protocol class uvicorn instantiates per connection, bound to ``limits``."""
    return type("FerryHttpProtocol", (LimitedHttpProtocol,), {"limits": limits})

"""The wire between a front-end process and the compute process: one socket pair per front end,
pickled messages framed by ``multiprocessing.connection`` (both ends are this program, on a
private socket pair that no one else can reach).

Messages are tuples whose first item is the kind:

front end → compute
    ``(INFER, [(id, inputs, rows), ...])``: validated requests, as many as were ready at once;
    ``(CALL, token, what, payload)``: a question (``"stats"``; ``"metrics"`` with this front
    end's own exposition) answered with ``(REPLY, token, answer)``; ``(LISTENING,)``: both
    servers are bound.

compute → front end
    ``(HELLO, signature, settings)`` first; ``(STATE, ready, device)`` whenever readiness
    changes; ``(ANSWERS, [(id, ok, outputs or error), ...])``; ``(REPLY, token, answer)``;
    ``(CALL, token, "exposition", None)``: this front end's metrics, to merge into a scrape.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from multiprocessing.connection import Connection
from typing import Any

INFER = "infer"
CALL = "call"
LISTENING = "listening"
HELLO = "hello"
STATE = "state"
ANSWERS = "answers"
REPLY = "reply"

Message = tuple[Any, ...]


class Channel:
    """One end of a socket pair: thread-safe ``send``; ``recv`` from one thread only."""

    def __init__(self, fd: int) -> None:
        self._connection = Connection(fd)
        self._send_lock = threading.Lock()

    def send(self, message: Message) -> None:
        """Send one message; raises ``OSError`` once the other end is gone."""
        with self._send_lock:
            self._connection.send(message)

    def recv(self) -> Message:
        """The next message; raises ``EOFError`` or ``OSError`` once the other end is gone."""
        message = self._connection.recv()
        if not isinstance(message, tuple) or not message:
            raise OSError(f"malformed message on the front-end channel: {type(message).__name__}")
        return message

    def shutdown(self) -> None:
        """Wake both ends' ``recv`` with ``EOFError`` (safe from any thread)."""
        with contextlib.suppress(OSError):
            duplicate = socket.fromfd(self._connection.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)
            with duplicate:
                duplicate.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        """Close this end (the other end's ``recv`` then raises ``EOFError``)."""
        self._connection.close()

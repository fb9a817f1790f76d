"""The wire between a front-end process and the compute process.

Each front end has two private socket pairs with the compute process:

- the *data* channel, served by both event loops (:class:`ChannelProtocol`): requests, answers,
  readiness and metrics gathering. Messages that are ready at once leave as one write and are
  read many per ``recv``, and no thread hand-off sits between a socket and the code that uses
  the message;
- the *control* channel (:class:`BlockingChannel`), for the front end's synchronous questions
  (statistics, metrics) from its event loop or its gRPC threads, one at a time.

Frames are a 4-byte big-endian length and a pickle: both ends are this program, on socket pairs
no one else can reach. Messages are tuples whose first item is the kind:

data, front end → compute
    ``(INFER, [(id, inputs, rows), ...])`` (arrays packed by :func:`pack_arrays`);
    ``(LISTENING,)`` once both servers are bound;
    ``(REPLY, token, exposition)`` to a ``CALL``.
data, compute → front end
    ``(STATE, ready, device)`` whenever readiness changes;
    ``(ANSWERS, [(id, ok, outputs or error), ...])``;
    ``(CALL, token, "exposition")``: this front end's metrics, to merge into a scrape.
control
    ``(HELLO, signature, settings)`` first, compute → front end; then
    ``(CALL, token, what, payload)`` → ``(REPLY, token, answer)`` with ``what`` ``"stats"`` or
    ``"metrics"`` (payload: the asking front end's own exposition).
"""

from __future__ import annotations

import asyncio
import logging
import pickle
import socket
import struct
from collections.abc import Callable, Sequence
from typing import Any, cast

import numpy as np

INFER = "infer"
LISTENING = "listening"
STATE = "state"
ANSWERS = "answers"
CALL = "call"
REPLY = "reply"
HELLO = "hello"

Message = tuple[Any, ...]

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!I")
MAX_FRAME_BYTES = 2**31 - 1
"""Largest frame: a request is at most 2 GiB (``max_request_bytes``)."""


PackedArray = tuple[bytes, str, tuple[int, ...]] | np.ndarray


def pack_arrays(arrays: Sequence[np.ndarray]) -> list[PackedArray]:
    """Arrays as (bytes, dtype, shape): ~10x cheaper to pickle and unpickle than ndarrays.
    Object arrays travel as they are."""
    return [
        array if array.dtype.hasobject else (array.tobytes(), array.dtype.str, array.shape)
        for array in arrays
    ]


def unpack_arrays(packed: Sequence[PackedArray]) -> list[np.ndarray]:
    """The arrays :func:`pack_arrays` packed (read-only views of the received bytes)."""
    return [
        item
        if isinstance(item, np.ndarray)
        else np.frombuffer(item[0], dtype=item[1]).reshape(item[2])
        for item in packed
    ]


def encode(message: Message) -> bytes:
    """One frame holding ``message``."""
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(body)) + body


class FrameReader:
    """Reassembles frames from a byte stream cut anywhere."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Message]:
        """The messages completed by ``data``, in order; raises ``OSError`` on a bad frame."""
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        start = 0
        end = len(buffer)
        while end - start >= _HEADER.size:
            (size,) = _HEADER.unpack_from(buffer, start)
            if size > MAX_FRAME_BYTES:
                raise OSError(f"frame of {size} bytes on a front-end channel")
            if end - start - _HEADER.size < size:
                break
            body = memoryview(buffer)[start + _HEADER.size : start + _HEADER.size + size]
            try:
                message = pickle.loads(body)
            finally:
                body.release()
            if not isinstance(message, tuple) or not message:
                raise OSError(f"malformed message on a front-end channel: {type(message).__name__}")
            messages.append(message)
            start += _HEADER.size + size
        if start:
            del buffer[:start]
        return messages


class ChannelProtocol(asyncio.Protocol):
    """A channel served by the event loop: ``on_messages`` gets each read's messages."""

    def __init__(
        self, on_messages: Callable[[list[Message]], None], on_lost: Callable[[], None]
    ) -> None:
        self._on_messages = on_messages
        self._on_lost = on_lost
        self._reader = FrameReader()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            messages = self._reader.feed(data)
        except (OSError, pickle.UnpicklingError) as error:  # closing ends the other side too
            log.error("front-end channel: %s; closing it", error)
            if self._transport is not None:
                self._transport.abort()
            return
        if messages:
            self._on_messages(messages)

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._on_lost()

    @property
    def open(self) -> bool:
        """Whether the other end is still there."""
        return self._transport is not None and not self._transport.is_closing()

    def send(self, message: Message) -> None:
        """Queue ``message`` for writing (never blocks); dropped once the channel closed."""
        if self._transport is not None:
            self._transport.write(encode(message))

    def close(self) -> None:
        """Close the channel (the other end's reads then end)."""
        if self._transport is not None:
            self._transport.close()


async def serve_channel(
    sock: socket.socket,
    on_messages: Callable[[list[Message]], None],
    on_lost: Callable[[], None],
) -> ChannelProtocol:
    """Serve ``sock`` (one end of a socket pair) on the running loop."""
    loop = asyncio.get_running_loop()
    protocol = ChannelProtocol(on_messages, on_lost)
    await loop.create_unix_connection(lambda: protocol, sock=sock)
    return protocol


class BlockingChannel:
    """A channel used with blocking calls: ``send`` and ``recv`` (one reader at a time)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._reader = FrameReader()
        self._ready: list[Message] = []

    def send(self, message: Message) -> None:
        """Write one message; raises ``OSError`` once the other end is gone."""
        self._sock.sendall(encode(message))

    def recv(self, timeout: float | None = None) -> Message:
        """The next message; raises ``EOFError`` once the other end is gone, ``TimeoutError``
        after ``timeout`` seconds."""
        self._sock.settimeout(timeout)
        while not self._ready:
            data = self._sock.recv(1 << 20)
            if not data:
                raise EOFError("channel closed")
            self._ready.extend(self._reader.feed(data))
        return self._ready.pop(0)

    def close(self) -> None:
        """Close this end."""
        self._sock.close()

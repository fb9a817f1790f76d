"""A minimal HTTP/1.1 keep-alive client for the load generator.

General-purpose clients (aiohttp, httpx) spend ~100 µs of Python per request, as much as a
fast server; on a one-core load generator that makes the client the bottleneck. This one sends a
request whose bytes were built once and reads the response with two stream reads, so the
server, not the client, sets the pace. One connection per closed-loop worker, reopened when the
server closes it. Responses with ``Content-Length``, ``Transfer-Encoding: chunked`` or
read-until-close bodies are understood.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass


def build_request(host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    """The full bytes of a ``POST`` with ``body`` (keep-alive, no compression)."""
    head = (
        f"POST {path} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Accept-Encoding: identity\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


@dataclass(frozen=True)
class ResponseHead:
    """What the client needs from a response's status line and headers."""

    status: int
    content_length: int | None
    chunked: bool
    close: bool


def parse_head(head: bytes) -> ResponseHead:
    """Parse the status line and headers (``head`` ends with the blank line)."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ValueError(f"malformed status line {lines[0]!r}")
    length: int | None = None
    chunked = False
    close = parts[0] == "HTTP/1.0"
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        key = name.strip().lower()
        value = value.strip().lower()
        if key == "content-length":
            length = int(value)
        elif key == "transfer-encoding":
            chunked = "chunked" in value
        elif key == "connection":
            close = "close" in value
    return ResponseHead(int(parts[1]), length, chunked, close)


class Connection:
    """One keep-alive connection used by one worker at a time."""

    def __init__(self, host: str, port: int, request: bytes) -> None:
        self._host = host
        self._port = port
        self._request = request
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection(self._host, self._port)
        self._reader, self._writer = reader, writer
        return reader, writer

    async def post(self) -> tuple[int, bytes]:
        """Send the prepared request; return the status and the body."""
        reader, writer = self._reader, self._writer
        if reader is None or writer is None:
            reader, writer = await self._open()
        try:
            writer.write(self._request)
            head = parse_head(await reader.readuntil(b"\r\n\r\n"))
            if head.content_length is not None:
                body = await reader.readexactly(head.content_length)
            elif head.chunked:
                body = await _read_chunked(reader)
            else:
                body = await reader.read()
                head = ResponseHead(head.status, len(body), False, True)
        except BaseException:
            await self.close()
            raise
        if head.close:
            await self.close()
        return head.status, body

    async def close(self) -> None:
        """Close the socket (the next ``post`` reconnects)."""
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size_line = await reader.readuntil(b"\r\n")
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # trailers (if any) end with an empty line
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)

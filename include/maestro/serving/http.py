"""uvicorn's httptools protocol, writing each response in one piece.

uvicorn writes a response's status line and headers when the app starts the response, and its
body when the app sends it: two writes, so two TCP segments, and for a small JSON answer the
server and its client each pay twice (system calls, loopback or network processing, wake-ups)
for what one write carries. Here the head is held until the body's first write, in the same
turn of the event loop, and goes with it. A head whose body does not follow within that turn
(a streamed response whose first chunk takes time) is written on its own at the next turn, so
nothing waits longer than it would have.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class OneWriteTransport:
    """A connection's transport that holds a response head until the next write."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._head = b""

    def write(self, data: bytes) -> None:
        if self._head:
            data, self._head = self._head + data, b""
        elif data.startswith(b"HTTP/1.1 ") and not data.startswith(b"HTTP/1.1 1"):
            self._head = data  # a final status line: its body follows (1xx go out at once)
            asyncio.get_running_loop().call_soon(self._write_head)
            return
        self._transport.write(data)

    def _write_head(self) -> None:
        if self._head:
            head, self._head = self._head, b""
            self._transport.write(head)

    def close(self) -> None:
        self._write_head()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


@cache
def read_limits() -> tuple[float, float]:
    """How long a request's line and headers, then its body, may take to arrive (settings)."""
    from maestro.config import get_settings

    settings = get_settings()
    return settings.serving_header_timeout_seconds, settings.serving_body_timeout_seconds


SWEEP_SECONDS = 1.0  # how often a server's connections are checked for a request too slow
_swept: list[set] = []  # the servers' connection sets already swept (kept: ids are reused)
TIMED_OUT = b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


class OneWriteProtocol(HttpToolsProtocol):
    """What `maestro serve` gives uvicorn as its HTTP protocol. It also bounds how long a
    request may take to arrive: its head within the first limit of `read_limits()` from its
    first byte (or from the connection opening), or the connection is closed; its body within
    the second from the end of its head, or it is answered 408 and the connection closed.
    uvicorn would wait for a client that dribbles forever (its keep-alive timer stops at the
    first byte). A request only notes when its head and body began; one sweep a second per
    server acts on those past their limits (a timer per request would cost each request more)."""

    _head_started: float | None = None
    _body_started: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport))  # type: ignore[arg-type]
        self._head_started = self.loop.time()
        if not any(swept is self.connections for swept in _swept):
            _swept.append(self.connections)
            self.loop.call_later(SWEEP_SECONDS, _sweep, self.loop, self.connections)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_started is None:
            self._head_started = self.loop.time()

    def on_headers_complete(self) -> None:
        self._head_started, self._body_started = None, self.loop.time()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._body_started = None
        super().on_message_complete()


def _sweep(loop: asyncio.AbstractEventLoop, connections: set) -> None:
    """Close the connections whose request is late (a late body is answered 408 first); then
    again in SWEEP_SECONDS."""
    now = loop.time()
    head_limit, body_limit = read_limits()
    for connection in list(connections):
        transport = connection.transport
        if transport.is_closing():
            continue
        head = getattr(connection, "_head_started", None)
        body = getattr(connection, "_body_started", None)
        if head is not None and now - head > head_limit:
            transport.close()
        elif body is not None and now - body > body_limit:
            connection._body_started = None
            transport.write(TIMED_OUT)
            transport.close()
    loop.call_later(SWEEP_SECONDS, _sweep, loop, connections)

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

    def __getattr__(self, name: str):
        return getattr(self._transport, name)


@cache
def header_seconds() -> float:
    """How long a request's line and headers may take to arrive, whole (a setting)."""
    from maestro.config import get_settings

    return get_settings().serving_header_timeout_seconds


SWEEP_SECONDS = 1.0  # how often a server's connections are checked for a head too slow
_swept: list[set] = []  # the servers' connection sets already swept (kept: ids are reused)


class OneWriteProtocol(HttpToolsProtocol):
    """What `maestro serve` gives uvicorn as its HTTP protocol. It also closes a connection
    whose request head does not arrive whole within `header_seconds()` of its first byte (or of
    the connection opening): uvicorn would wait for a client that dribbles headers forever (its
    keep-alive timer stops at the first byte). A request only notes when its head began; one
    sweep a second per server closes the connections past the limit (a timer per request would
    cost each request more). The body's deadline is the app's."""

    _head_started: float | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport))
        self._head_started = self.loop.time()
        if not any(swept is self.connections for swept in _swept):
            _swept.append(self.connections)
            self.loop.call_later(SWEEP_SECONDS, _sweep, self.loop, self.connections)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_started is None:
            self._head_started = self.loop.time()

    def on_headers_complete(self) -> None:
        self._head_started = None
        super().on_headers_complete()


def _sweep(loop: asyncio.AbstractEventLoop, connections: set) -> None:
    """Close the connections whose request head is late; then again in SWEEP_SECONDS."""
    late = loop.time() - header_seconds()
    for connection in list(connections):
        started = getattr(connection, "_head_started", None)
        if started is not None and started < late and not connection.transport.is_closing():
            connection.transport.close()
    loop.call_later(SWEEP_SECONDS, _sweep, loop, connections)

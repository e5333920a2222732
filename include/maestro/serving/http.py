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


class OneWriteProtocol(HttpToolsProtocol):
    """What `maestro serve` gives uvicorn as its HTTP protocol. It also closes a connection
    whose request head does not arrive whole within `header_seconds()` of its first byte (or of
    the connection opening): uvicorn would wait for a client that dribbles headers forever
    (its keep-alive timer stops at the first byte). The body's deadline is the app's."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport))
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._head_timer is None:
            self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(header_seconds(), self._head_too_slow)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()

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


class OneWriteProtocol(HttpToolsProtocol):
    """What `maestro serve` gives uvicorn as its HTTP protocol."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(OneWriteTransport(transport))

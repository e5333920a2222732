"""The server's HTTP protocol for real (uvicorn on loopback): each response in one write, and
every kind of response still whole: small answers, slow streams, HEAD, 100-continue, errors."""

from __future__ import annotations

import asyncio
import http.client
import socket
import threading

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from maestro.serving.http import OneWriteTransport
from maestro.waiting import wait_for
from maestro.web import free_port


async def small(request) -> JSONResponse:
    return JSONResponse({"predictions": [0.5]})


SECOND_CHUNK = threading.Event()  # set by the test once the head of /slow has arrived


async def slow(request) -> StreamingResponse:
    async def chunks():
        yield b"first "
        released = await asyncio.to_thread(SECOND_CHUNK.wait, 10)
        yield b"second" if released else b"the head was held until the stream ended"

    return StreamingResponse(chunks(), media_type="text/plain")


async def echo(request) -> JSONResponse:
    return JSONResponse({"got": len(await request.body())})


@pytest.fixture(scope="module")
def server():
    app = Starlette(
        routes=[
            Route("/small", small, methods=["GET", "HEAD"]),
            Route("/slow", slow),
            Route("/echo", echo, methods=["POST"]),
        ]
    )
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        http="maestro.serving.http:OneWriteProtocol",
        log_level="warning",
    )
    running = uvicorn.Server(config)
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    wait_for(lambda: running.started, timeout=20, interval=0.05, what="uvicorn did not start")
    yield port
    running.should_exit = True
    thread.join(timeout=10)


class Recorder:
    """Stands in for the socket under the transport: what was written, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(data)


def test_a_head_and_its_body_go_in_one_write_and_a_lone_head_at_the_next_turn():
    async def scenario() -> list[list[bytes]]:
        socket_side = Recorder()
        transport = OneWriteTransport(socket_side)
        transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        transport.write(b"{}")
        together = list(socket_side.writes)
        socket_side.writes.clear()
        transport.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
        assert socket_side.writes == []  # held for this turn
        await asyncio.sleep(0)
        alone = list(socket_side.writes)
        socket_side.writes.clear()
        transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # never held: the client waits on it
        return [together, alone, list(socket_side.writes)]

    together, alone, interim = asyncio.run(scenario())
    assert together == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    assert alone == [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"]
    assert interim == [b"HTTP/1.1 100 Continue\r\n\r\n"]


def test_every_kind_of_response_arrives_whole_on_a_kept_alive_connection(server):
    conn = http.client.HTTPConnection("127.0.0.1", server, timeout=10)
    for _ in range(3):
        conn.request("GET", "/small")
        answer = conn.getresponse()
        assert (answer.status, answer.read()) == (200, b'{"predictions":[0.5]}')
    conn.request("HEAD", "/small")
    head = conn.getresponse()
    assert head.status == 200 and head.read() == b""
    SECOND_CHUNK.clear()
    conn.request("GET", "/slow")
    streamed = conn.getresponse()  # the head arrives before the second chunk is even made
    SECOND_CHUNK.set()
    assert streamed.status == 200
    assert streamed.read() == b"first second"
    conn.request("GET", "/nope")
    missing = conn.getresponse()
    assert missing.status == 404 and missing.read()
    conn.close()


def test_a_client_that_expects_100_continue_gets_it_before_sending_its_body(server):
    body = b"x" * 1000
    with socket.create_connection(("127.0.0.1", server), timeout=10) as raw:
        raw.sendall(
            b"POST /echo HTTP/1.1\r\nHost: test\r\nContent-Type: application/octet-stream\r\n"
            b"Content-Length: 1000\r\nExpect: 100-continue\r\n\r\n"
        )
        assert raw.recv(1024).startswith(b"HTTP/1.1 100 Continue")
        raw.sendall(body)
        answer = b""
        while not answer.endswith(b'{"got":1000}'):
            chunk = raw.recv(4096)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 200 OK")

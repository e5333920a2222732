"""An HTTP/1.1 load generator for the serving benchmark, run in its own process: keep-alive
connections on loopback, one request body, latencies in ms.

    python bench/loadgen.py URL BODY_FILE --connections 8 --seconds 10 [--rate 200]

Without --rate: closed loop, each connection sends its next request when the answer arrives
(maximum throughput). With --rate: open loop at that many requests per second, latency counted
from when each request was due, so a stall is not hidden by the requests it delays.
Prints one JSON line: requests, errors, rps, p50_ms, p99_ms (and with --raw, latencies_ms:
every latency, for pooling several runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from urllib.parse import urlsplit

import numpy as np


async def one_request(reader, writer, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def run(
    url: str, body: bytes, connections: int, seconds: float, rate: float | None, raw: bool
) -> dict:
    parts = urlsplit(url)
    request = (
        f"POST {parts.path} HTTP/1.1\r\nHost: {parts.hostname}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter()
    end = start + seconds
    due = [start]

    async def closed(reader, writer):
        nonlocal errors
        while time.perf_counter() < end:
            t = time.perf_counter()
            if await one_request(reader, writer, request) != 200:
                errors += 1
            latencies.append((time.perf_counter() - t) * 1000)

    async def opened(reader, writer):
        nonlocal errors
        while True:
            scheduled = due[0]
            due[0] += 1 / rate
            if scheduled >= end:
                return
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if await one_request(reader, writer, request) != 200:
                errors += 1
            latencies.append((time.perf_counter() - scheduled) * 1000)

    streams = [
        await asyncio.open_connection(parts.hostname, parts.port) for _ in range(connections)
    ]
    worker = opened if rate else closed
    await asyncio.gather(*(worker(r, w) for r, w in streams))
    elapsed = time.perf_counter() - start
    for _, w in streams:
        w.close()
    values = np.asarray(latencies)
    result = {
        "requests": len(values),
        "errors": errors,
        "rps": len(values) / elapsed,
        "p50_ms": float(np.percentile(values, 50)),
        "p99_ms": float(np.percentile(values, 99)),
    }
    return {**result, "latencies_ms": latencies} if raw else result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("body_file")
    p.add_argument("--connections", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--rate", type=float)
    p.add_argument("--raw", action="store_true")
    a = p.parse_args()
    with open(a.body_file, "rb") as f:
        body = f.read()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    print(json.dumps(asyncio.run(run(a.url, body, a.connections, a.seconds, a.rate, a.raw))))


if __name__ == "__main__":
    main()

"""The one HTTP client of the platform (httpx): the Airflow REST API, the model server, and
readiness probes of the services it starts."""

from __future__ import annotations

import httpx


def client(
    base_url: str,
    *,
    token: str | None = None,
    timeout: float = 10.0,
    transport: httpx.BaseTransport | None = None,
) -> httpx.Client:
    """A keep-alive client of one service; `transport` replaces the network (tests)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(
        base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
    )


def answers(url: str, timeout: float = 2.0) -> bool:
    """Whether `url` answers 200 now (a readiness probe: any failure is a no)."""
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now (for servers started side by side)."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

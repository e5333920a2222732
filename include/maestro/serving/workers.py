"""`maestro serve --workers N`: N uvicorn servers, each in its own process with its own
listening socket on the same port (`SO_REUSEPORT`), so that the kernel spreads connections
across them. With one socket shared by every worker (uvicorn's own `--workers`), whichever
worker wakes first accepts: a client that opens its keep-alive connections at once may land
them all on one worker, which then does all the work while the others idle.

The supervisor starts the workers, replaces one that dies, and on SIGTERM or SIGINT stops them
all (each shuts down gracefully: its prediction log is written) and waits for them.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import threading
from typing import Any

log = logging.getLogger("maestro.serving")
CHECK_SECONDS = 0.5


def port_socket(host: str, port: int) -> socket.socket:
    """A socket bound to host:port in the port's SO_REUSEPORT group (not yet listening)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


def run_worker(options: dict[str, Any]) -> None:
    """One worker: its own socket in the port's group, then uvicorn on it (the app from the
    environment). Uvicorn listens on it only once the app has started (its models loaded): a
    worker that listened before would be handed its share of the connections and keep them
    waiting while it loads, a replacement worker for as long as a model takes to load."""
    import uvicorn

    stop_with_supervisor()
    sock = port_socket(options["host"], options["port"])
    config = uvicorn.Config("maestro.serving.runner:app_from_environment", factory=True, **options)
    uvicorn.Server(config).run(sockets=[sock])


def stop_with_supervisor() -> None:
    """Have Linux send this worker SIGTERM when its supervisor dies, however it dies: the
    worker then shuts down as on any SIGTERM (its prediction log written) instead of living
    on, orphaned, on the port."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1  # the name prctl(2) gives it
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def supervise(options: dict[str, Any], workers: int) -> None:
    """Run `workers` worker processes on options' host and port until SIGTERM or SIGINT."""
    # claim the port first: a port another program holds fails here, once, with its error
    # (a bound socket that does not listen takes no connections from the workers)
    claim = port_socket(options["host"], options["port"])
    spawn = multiprocessing.get_context("spawn")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    def started() -> multiprocessing.process.BaseProcess:
        process = spawn.Process(target=run_worker, args=(options,), name="maestro-worker")
        process.start()
        return process

    processes = [started() for _ in range(workers)]
    try:
        while not stop.wait(CHECK_SECONDS):
            for i, process in enumerate(processes):
                if not process.is_alive():
                    log.warning(
                        "worker pid %d exited (code %s); starting another",
                        process.pid,
                        process.exitcode,
                    )
                    processes[i] = started()
    finally:
        for process in processes:
            if process.is_alive():
                process.terminate()  # SIGTERM: a graceful shutdown
        for process in processes:
            process.join(options.get("timeout_graceful_shutdown", 30) + 10)
        claim.close()

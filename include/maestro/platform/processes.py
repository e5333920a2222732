"""Stopping the process groups the platform starts (a DAG run, Airflow's components, a server)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def signal_group(child: subprocess.Popen, signum: int) -> None:
    """Send `signum` to the child's whole process group (it was started in a session of its
    own), if any of it is left."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signum)


def stop_group(child: subprocess.Popen, signum: int, grace: float) -> bool:
    """`signum` to the child's group, then `reap_group`."""
    signal_group(child, signum)
    return reap_group(child, grace)


def reap_group(child: subprocess.Popen, grace: float) -> bool:
    """Wait up to `grace` seconds for a child already asked to stop, then SIGKILL whatever is
    left of its group (grandchildren too, even when the child itself has exited). True if the
    child had exited by itself within the grace time."""
    try:
        child.wait(timeout=max(0.1, grace))
        stopped = True
    except subprocess.TimeoutExpired:
        stopped = False
    signal_group(child, signal.SIGKILL)
    child.wait()
    return stopped


def worker_hostname() -> str:
    """Airflow's `hostname_callable` for Celery workers sharing one machine: the machine's name
    after the worker's own (`MAESTRO_WORKER_NAME`), so that each task instance says which worker
    ran it, as it would with one worker per machine."""
    import socket

    host = socket.getfqdn()
    name = os.environ.get("MAESTRO_WORKER_NAME")
    return f"{name}.{host}" if name else host

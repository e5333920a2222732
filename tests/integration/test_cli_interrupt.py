"""Ctrl-C while `maestro train` waits for a human: the command stops within seconds, says what
is left and how to finish it, moves no alias and leaves no process behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from maestro import registry, tracking, vocabulary
from maestro.governance import decisions

pytestmark = pytest.mark.slow


def read_until(proc: subprocess.Popen, marker: str, timeout: float) -> str:
    """Lines of `proc`'s output up to the one containing `marker`."""
    deadline, seen = time.monotonic() + timeout, []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        seen.append(line)
        if marker in line:
            return "".join(seen)
    raise AssertionError(f"no {marker!r} within {timeout:.0f}s:\n{''.join(seen)[-3000:]}")


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_ctrl_c_stops_a_run_waiting_for_approval(use_specs):
    settings = use_specs(
        {"demo": {"source": {"rows": 8000}, "governance": {"latency_budget_ms": 500}}}
    )
    maestro = str(Path(sys.executable).with_name("maestro"))
    proc = subprocess.Popen(
        [maestro, "train", "demo", "--trials", "4", "--workers", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    try:
        before = read_until(proc, "waiting for a decision on demo version 1", timeout=600)
        time.sleep(1)  # the approval is deferred and waiting, not just announced
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        stopped = time.monotonic()
        rest, _ = proc.communicate(timeout=30)
        took = time.monotonic() - stopped
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = before + rest
    assert proc.returncode == 130, output[-3000:]
    assert took < 10, f"took {took:.1f}s to stop"
    assert "interrupted by SIGINT: stopped train_demo run" in rest
    assert "not finished: request_approval, promote" in rest
    assert "demo version 1 passed every gate and waits for a decision" in rest
    assert "maestro approve demo 1 --by admin" in rest
    assert "maestro promote demo 1 --by admin" in rest
    assert not group_alive(proc.pid), "a process of the run is still alive"

    mlc = tracking.client(settings)
    assert "champion" not in mlc.get_registered_model("demo").aliases
    version = mlc.get_model_version("demo", "1")
    assert "approval" not in version.tags
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = session.query(DagRun).filter_by(run_id=version.tags["airflow_run_id"]).one()
        assert run.state == "failed"
        states = {ti.task_id: ti.state for ti in run.get_task_instances(session=session)}
    assert states["request_approval"] == "failed" and states["promote"] == "skipped"

    # what the message says to do works
    decisions.record_decision(settings, "demo", "1", vocabulary.APPROVED, "admin", "", "cli")
    registry.promote(settings, "demo", "1", "admin")
    assert str(registry.champion_version(settings, "demo").version) == "1"

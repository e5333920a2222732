"""`maestro up` for real: Airflow's api-server, scheduler, dag-processor and triggerer with the
LocalExecutor, and the MLflow server, all on loopback. A run triggered through Airflow's REST
API (as CI does) trains and registers a model that the MLflow server then serves."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from maestro.airflow_api import AirflowClient
from maestro.services import admin_password

from tests.conftest import write_specs

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, platform: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert platform.poll() is None, f"maestro up exited while waiting for {what}"
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


@pytest.fixture
def platform(tmp_path: Path):
    """`maestro up` on a fresh state folder and free ports; stopped with SIGTERM afterwards."""
    specs = write_specs(
        tmp_path / "specs",
        {
            "demo": {
                "source": {"rows": 8000},
                "trials": 4,
                "schedule": None,
                "governance": {"latency_budget_ms": 500},
            }
        },
    )
    home = tmp_path / "home"
    ports = {"airflow": free_port(), "mlflow": free_port()}
    env = {
        **os.environ,
        "MAESTRO_HOME": str(home),
        "MAESTRO_SPECS_DIR": str(specs),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    }
    for key in ("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "MLFLOW_TRACKING_URI", "AIRFLOW_HOME"):
        env.pop(key, None)  # the session's; this platform has its own state folder
    log = (tmp_path / "up.log").open("w")
    command = [str(Path(sys.executable).with_name("maestro")), "up"]
    command += ["--airflow-port", str(ports["airflow"]), "--mlflow-port", str(ports["mlflow"])]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    yield process, home, ports, tmp_path / "up.log"
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    log.close()


def test_a_run_triggered_through_the_rest_api_registers_a_model(platform):
    process, home, ports, log = platform
    wait_for(lambda: "Ctrl-C stops everything" in log.read_text(), 180, "both UIs", process)
    airflow = AirflowClient(f"http://127.0.0.1:{ports['airflow']}", "admin", admin_password(home))
    wait_for(
        lambda: {"train_demo", "train_adult_income"} <= airflow.dag_ids(),
        120,
        "the dag-processor to parse the DAGs",
        process,
    )
    airflow.unpause("train_demo")
    run_id = airflow.trigger("train_demo", {"trials": 4, "workers": 2})

    def asking() -> bool:
        tasks = {t["task_id"]: t["state"] for t in airflow.task_instances("train_demo", run_id)}
        assert "failed" not in tasks.values(), tasks
        return tasks.get("request_approval") == "deferred"

    wait_for(asking, 600, "the approval request", process)
    # the admin approves in Required Actions: the HITL REST API, as the UI calls it
    airflow.respond("train_demo", run_id, "request_approval", ["Approve"])
    assert airflow.wait("train_demo", run_id, timeout=300)["state"] == "success"
    tasks = airflow.task_instances("train_demo", run_id)
    assert sorted(t["map_index"] for t in tasks if t["task_id"] == "tune") == [0, 1]
    states = {t["task_id"]: t["state"] for t in tasks}
    assert states["promote"] == "success" and states["not_promoted"] == "skipped", states

    mlflow = f"http://127.0.0.1:{ports['mlflow']}"
    url = f"{mlflow}/api/2.0/mlflow/registered-models/alias?name=demo&alias=champion"
    with urllib.request.urlopen(url, timeout=10) as response:
        version = json.loads(response.read())["model_version"]
    tags = {t["key"]: t["value"] for t in version["tags"]}
    assert tags["airflow_run_id"] == run_id
    assert tags["approval"] == "approved" and tags["approval_by"] == "admin"
    assert tags["approval_via"] == "airflow-ui"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    for port in ports.values():
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"

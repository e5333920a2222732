"""The platform scaled out, every store shared: `maestro up` with Airflow's CeleryExecutor and
two Celery workers on a Redis broker; Airflow's metadata, MLflow's backend store, the Optuna
study and Feast's registry in PostgreSQL; Feast's online store in Redis; tasks, the CLI and the
model server reaching MLflow's server over HTTP, artifacts served by it.

`train_demo` runs its tuning trials on both workers; then a worker is SIGKILLed while it fits
the final model: the task is retried on the other worker, the run still succeeds, and it
registers exactly one version."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from maestro.config import Settings
from maestro.platform.airflow_api import AirflowClient
from maestro.platform.services import admin_password
from tests.conftest import deciding, postgres_databases, redis_databases
from tests.integration.test_platform import running_platform, wait_for
from tests.integration.test_serving import post, server

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


@pytest.fixture
def shared_platform(tmp_path: Path):
    with (
        postgres_databases("airflow", "mlflow", "optuna", "feast") as databases,
        redis_databases(2) as (broker, online_store),
    ):

        def shared_stores(ports) -> dict[str, str]:
            return {
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": databases["airflow"].replace(
                    "postgresql://", "postgresql+psycopg2://"
                ),
                "MAESTRO_EXECUTOR": "celery",
                "MAESTRO_CELERY_WORKERS": "2",
                "MAESTRO_WORKER_CONCURRENCY": "1",  # two tune tasks: one per worker
                "MAESTRO_CELERY_BROKER": broker,
                "MAESTRO_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports.mlflow}",
                "MAESTRO_MLFLOW_BACKEND_STORE": databases["mlflow"],
                "MAESTRO_OPTUNA_STORAGE": databases["optuna"],
                "MAESTRO_FEAST_REGISTRY": databases["feast"],
                "MAESTRO_FEAST_ONLINE_STORE": online_store,
                # a lost worker's task fails (and is retried) 20 s after its last heartbeat
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
                "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            }

        demo = {"source": {"rows": 8000}, "trials": 4, "workers": 2, "schedule": None}
        overrides = {"demo": {**demo, "governance": {"latency_budget_ms": 500}}}
        with running_platform(tmp_path, overrides, shared_stores) as up:
            yield (*up, databases, online_store)


def worker_pids(log: str) -> dict[str, int]:
    """The Celery workers `maestro up` started, by name."""
    return {m[0]: int(m[1]) for m in re.findall(r"started (worker-\d+)\s+pid (\d+)", log)}


def test_training_runs_on_two_celery_workers_over_shared_stores(shared_platform):
    process, home, ports, log, env, databases, online_store = shared_platform
    wait_for(lambda: "Ctrl-C stops everything" in log.read_text(), 180, "the platform", process)
    workers = worker_pids(log.read_text())
    assert set(workers) == {"worker-1", "worker-2"}
    base_url = f"http://127.0.0.1:{ports.airflow}"
    airflow = AirflowClient(base_url, "admin", admin_password(home))
    wait_for(lambda: "train_demo" in airflow.dag_ids(), 120, "the DAGs", process)
    airflow.unpause("train_demo")
    tracking_uri = f"http://127.0.0.1:{ports.mlflow}"
    registry = Settings(home=home, mlflow_tracking_uri=tracking_uri)

    with deciding(registry, "demo"):
        run_id = airflow.trigger("train_demo")

        def running(task_id: str) -> dict | None:
            found = airflow.task_instances("train_demo", run_id)
            return next(
                (t for t in found if t["task_id"] == task_id and t["state"] == "running"), None
            )

        # a worker is lost (SIGKILL, its tasks with it) while it fits the final model
        victim = wait_for(lambda: running("train_final"), 600, "train_final to start", process)
        lost = victim["hostname"].split(".")[0]
        os.killpg(workers[lost], signal.SIGKILL)
        assert airflow.wait("train_demo", run_id, timeout=600)["state"] == "success"
    assert f"lost: {lost} exited" in log.read_text() and process.poll() is None
    tasks = {
        (t["task_id"], t["map_index"]): t for t in airflow.task_instances("train_demo", run_id)
    }
    hosts = {tasks["tune", i]["hostname"].split(".")[0] for i in (0, 1)}
    assert hosts == {"worker-1", "worker-2"}  # the trials ran on both workers
    (survivor,) = set(workers) - {lost}
    retried = tasks["train_final", -1]  # on the other worker, after the lost one's heartbeat
    assert retried["try_number"] == 2 and retried["hostname"].split(".")[0] == survivor
    assert tasks["tune", 0]["queue"] == retried["queue"] == "training"
    assert tasks["ingest", -1]["queue"] == "default"

    from mlflow import MlflowClient

    mlflow = MlflowClient(tracking_uri, tracking_uri)
    versions = mlflow.search_model_versions("name = 'demo'")
    assert [v.tags["airflow_run_id"] for v in versions] == [run_id]  # none for the lost try
    # every store is the shared one: nothing went to the state folder's embedded defaults
    import optuna
    import psycopg2
    import redis

    (version,) = versions
    assert mlflow.get_run(version.run_id).info.artifact_uri.startswith("mlflow-artifacts:/")
    study = optuna.load_study(study_name=version.tags["optuna_study"], storage=databases["optuna"])
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states and len(states) == 4
    with psycopg2.connect(databases["feast"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT feature_view_name FROM feature_views")
        assert cur.fetchall() == [("demo_features",)]
    assert redis.Redis.from_url(online_store).dbsize() > 0
    assert not (home / "mlflow.db").exists() and not (home / "feast" / "registry.db").exists()
    assert not (home / "airflow" / "airflow.db").exists()
    assert not (home / "feast" / "online_store.db").exists()

    # the CLI reads the registry through the MLflow server
    show = subprocess.run(
        [str(Path(sys.executable).with_name("maestro")), "show", "demo"],
        env={**env, "MAESTRO_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert show.returncode == 0, show.stdout + show.stderr
    assert f"tracking store {tracking_uri}" in show.stdout

    # the model server loads the champion through the MLflow server and scores a request of
    # just a customer id on the features training materialized to Redis (SQL registry)
    stores = {
        key: env[key]
        for key in (
            "MAESTRO_MLFLOW_TRACKING_URI",
            "MAESTRO_FEAST_REGISTRY",
            "MAESTRO_FEAST_ONLINE_STORE",
        )
    }
    with server(home, **stores, MAESTRO_PREDICTION_LOG="off") as (_, target):
        snapshot = sorted((home / "snapshots").rglob("*.parquet"))[-1]
        customer = int(pd.read_parquet(snapshot)["customer_id"].iloc[-1])
        status, answer = post(target, json.dumps({"customer_id": customer}).encode())
        assert status == 200 and answer["version"] == version.version, answer
        assert 0 <= answer["predictions"][0] <= 1

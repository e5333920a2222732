"""What `maestro up` starts for each choice of executor and stores (each store one setting);
tests/integration/test_platform.py runs the shared, Celery one for real."""

from __future__ import annotations

import os
import time
from pathlib import Path
from unittest import mock

import pytest

from maestro.config import Settings, export_environment
from maestro.data.features import redis_connection_string
from maestro.errors import BadInput
from maestro.platform.services import Ports, check_executor, platform_commands


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_embedded_defaults_start_the_mlflow_ui_on_the_sqlite_store(tmp_path: Path):
    settings = Settings(home=tmp_path)
    mlflow = platform_commands(settings, Ports(mlflow=5123))["mlflow"]
    assert option(mlflow, "--backend-store-uri") == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert option(mlflow, "--port") == "5123" and "--serve-artifacts" not in mlflow
    assert not any(name.startswith("worker-") for name in platform_commands(settings, Ports()))
    assert "AIRFLOW__CORE__EXECUTOR" not in export_environment(settings)


def test_an_http_tracking_uri_makes_the_platform_start_that_server_serving_artifacts(
    tmp_path: Path,
):
    store = "postgresql://postgres@127.0.0.1:5432/mlflow"
    settings = Settings(
        home=tmp_path, mlflow_tracking_uri="http://127.0.0.1:5077", mlflow_backend_store=store
    )
    assert settings.tracking_server and settings.backend_store == store
    mlflow = platform_commands(settings, Ports())["mlflow"]
    assert option(mlflow, "--backend-store-uri") == store and option(mlflow, "--port") == "5077"
    assert "--serve-artifacts" in mlflow
    assert option(mlflow, "--artifacts-destination") == (tmp_path / "mlartifacts").as_uri()
    # clients (tasks, CLI, model server) get the server's address, never its database
    assert export_environment(settings)["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5077"
    # a server on another machine is not the platform's to start
    remote = Settings(home=tmp_path, mlflow_tracking_uri="https://mlflow.example")
    assert "mlflow" not in platform_commands(remote, Ports())


def test_celery_workers_each_serve_both_queues_under_their_own_name(tmp_path: Path):
    settings = Settings(home=tmp_path, executor="celery", celery_workers=3, worker_concurrency=4)
    commands = platform_commands(settings, Ports())
    workers = {name: c for name, c in commands.items() if name.startswith("worker-")}
    assert sorted(workers) == ["worker-1", "worker-2", "worker-3"]
    for name, command in workers.items():
        assert command[1:3] == ["celery", "worker"]
        assert option(command, "--celery-hostname") == f"{name}@%h"
        assert option(command, "--queues") == "default,training"
        assert option(command, "--concurrency") == "4"
    env = export_environment(settings)
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/0"


def test_celery_on_a_sqlite_metadata_database_is_refused_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path}/a.db")
    # the check puts the platform's environment (the executor's too) into this process, as the
    # CLI needs: the environment is put back as it was for the tests after this one
    with (
        mock.patch.dict(os.environ),
        pytest.raises(BadInput, match="AIRFLOW__DATABASE__SQL_ALCHEMY_CONN to a PostgreSQL"),
    ):
        check_executor(Settings(home=tmp_path, executor="celery"))


@pytest.mark.parametrize(
    ("url", "connection"),
    [
        ("redis://127.0.0.1:6379", "127.0.0.1:6379"),
        ("redis://cache:6380/3", "cache:6380,db=3"),
        ("rediss://:s3cret@cache/1", "cache:6379,db=1,password=s3cret,ssl=true"),
    ],
)
def test_the_online_store_url_becomes_feasts_redis_connection_string(url, connection):
    assert redis_connection_string(url) == connection


def test_an_online_store_that_is_no_redis_url_is_named():
    with pytest.raises(BadInput, match="MAESTRO_FEAST_ONLINE_STORE: 'cache:6379'"):
        redis_connection_string("cache:6379")


def test_a_component_that_dies_is_restarted_and_one_that_keeps_dying_stops_all(tmp_path):
    """Real processes: `steady` is killed once and comes back; `flaky` exits every time it
    starts, is restarted with growing delays, and is given up on after three exits, when the
    supervisor says so (the caller then stops everything)."""
    import signal
    import sys

    from maestro.platform.services import Supervisor, stop

    said: list[str] = []
    commands = {
        "steady": [sys.executable, "-c", "import time; time.sleep(60)"],
        "flaky": [sys.executable, "-c", "raise SystemExit(3)"],
    }
    supervisor = Supervisor(commands, tmp_path / "logs", said.append, (0.2, 0.4), 3, 60.0)
    supervisor.start_all()
    first = supervisor.children["steady"]
    os.killpg(first.pid, signal.SIGKILL)
    try:
        deadline = time.monotonic() + 30
        while supervisor.check():
            assert time.monotonic() < deadline, said
            time.sleep(0.05)
        steady = supervisor.children["steady"]
        assert steady.pid != first.pid and steady.poll() is None  # back, and running
    finally:
        stop(supervisor.children, said.append, grace=5)
    assert "steady exited (code -9); restarting in 0s (exit 1 of 3 allowed within 60s)" in said
    assert sum(line.startswith("flaky exited (code 3); restarting") for line in said) == 2
    assert said.count("restarted flaky pid " + str(supervisor.children["flaky"].pid)) == 1
    assert any(line.startswith("stopped: flaky exited 3 times within 60s") for line in said)
    assert (tmp_path / "logs").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "logs" / "flaky.log").stat().st_mode & 0o777 == 0o600


def test_the_local_prometheus_scrapes_the_model_server_with_its_token(tmp_path: Path):
    import yaml

    from maestro.platform.services import prometheus_config

    def serving_job(settings: Settings) -> dict:
        config = yaml.safe_load(prometheus_config(settings, Ports()).read_text())
        return next(j for j in config["scrape_configs"] if j["job_name"] == "maestro-serving")

    assert "authorization" not in serving_job(Settings(home=tmp_path / "open"))
    job = serving_job(Settings(home=tmp_path / "guarded", serving_token="a-serving-token"))
    token = Path(job["authorization"]["credentials_file"])
    assert token.read_text() == "a-serving-token" and token.stat().st_mode & 0o777 == 0o600

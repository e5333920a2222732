"""The training pipeline with Airflow's metadata, MLflow's tracking/registry store and Optuna's
storage all on a real PostgreSQL server, one setting each, and its data read from a warehouse
table there through an Airflow connection named by the spec."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy

from maestro.config import Settings
from maestro.data.synthetic import generate
from tests.support import deciding, postgres_databases, write_specs

pytestmark = pytest.mark.slow


@pytest.fixture
def databases():
    """Fresh databases: the platform's three, and three to restore into."""
    roles = ("airflow", "mlflow", "optuna")
    restored = (f"restored_{role}" for role in roles)
    with postgres_databases(*roles, *restored, "warehouse") as urls:
        yield urls


def test_training_pipeline_on_postgres(databases, tmp_path: Path):
    warehouse = databases["warehouse"]
    engine = sqlalchemy.create_engine(warehouse, poolclass=sqlalchemy.pool.NullPool)
    events = generate(8000, seed=7)
    naive = events.assign(event_timestamp=events["event_timestamp"].dt.tz_localize(None))
    naive.to_sql("events", engine, index=False)
    engine.dispose()
    source = {"format": "sql", "conn_id": "warehouse", "query": "SELECT * FROM events"}
    specs = write_specs(
        tmp_path / "specs",
        {"demo": {"source": source, "governance": {"latency_budget_ms": 500}}},
    )
    airflow_url = databases["airflow"].replace("postgresql://", "postgresql+psycopg2://")
    env = {
        **os.environ,
        "MAESTRO_HOME": str(tmp_path / "home"),
        "MAESTRO_SPECS_DIR": str(specs),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": airflow_url,
        "MAESTRO_MLFLOW_TRACKING_URI": databases["mlflow"],
        "MAESTRO_OPTUNA_STORAGE": databases["optuna"],
        # the Airflow connection `warehouse`, as a deployment's environment holds it
        "AIRFLOW_CONN_WAREHOUSE": warehouse.replace("postgresql://", "postgres://"),
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    maestro = str(Path(sys.executable).with_name("maestro"))
    registry = Settings(home=tmp_path / "home", mlflow_tracking_uri=databases["mlflow"])
    with deciding(registry, "demo", "approved", by="admin"):
        done = subprocess.run(
            [maestro, "train", "demo", "--trials", "4"],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "registered     models:/demo@challenger -> version 1" in done.stdout

    import optuna
    import psycopg2
    from mlflow import MlflowClient

    version = MlflowClient(databases["mlflow"], databases["mlflow"]).get_model_version_by_alias(
        "demo", "champion"
    )
    assert version.tags["airflow_dag_id"] == "train_demo"
    assert version.tags["validation_status"] == "passed"
    assert version.tags["data_source"] == "sql query via connection warehouse"
    assert version.tags["approval"] == "approved" and version.tags["approval_by"] == "admin"
    study = optuna.load_study(study_name=version.tags["optuna_study"], storage=databases["optuna"])
    assert len(study.trials) == 4
    with psycopg2.connect(databases["airflow"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, state FROM dag_run WHERE dag_id = 'train_demo'")
        assert cur.fetchall() == [(version.tags["airflow_run_id"], "success")]
    assert not (tmp_path / "home" / "mlflow.db").exists()
    assert not (tmp_path / "home" / "airflow" / "airflow.db").exists()

    # backup and restore: the same stores, restored into fresh databases and a fresh folder
    archive = tmp_path / "maestro.tar.gz"
    done = subprocess.run(
        [maestro, "backup", str(archive)], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mlflow (postgresql)" in done.stdout and "airflow (postgresql)" in done.stdout
    restored = {
        **env,
        "MAESTRO_HOME": str(tmp_path / "restored"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": databases["restored_airflow"],
        "MAESTRO_MLFLOW_TRACKING_URI": databases["restored_mlflow"],
        "MAESTRO_OPTUNA_STORAGE": databases["restored_optuna"],
    }
    done = subprocess.run(
        [maestro, "restore", str(archive)], env=restored, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    again = MlflowClient(databases["restored_mlflow"], databases["restored_mlflow"])
    copy = again.get_model_version_by_alias("demo", "champion")
    assert copy.version == version.version and copy.tags == version.tags
    study = optuna.load_study(
        study_name=version.tags["optuna_study"], storage=databases["restored_optuna"]
    )
    assert len(study.trials) == 4
    with psycopg2.connect(databases["restored_airflow"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT run_id, state FROM dag_run WHERE dag_id = 'train_demo'")
        assert cur.fetchall() == [(version.tags["airflow_run_id"], "success")]
    # the champion from the restored registry and artifacts answers as the original does
    import shutil

    import mlflow

    # by the versions' own artifact locations (no process-wide MLflow URI is set here)
    original = MlflowClient(databases["mlflow"], databases["mlflow"])
    original = mlflow.sklearn.load_model(
        original.get_model_version_download_uri("demo", version.version)
    )
    shutil.rmtree(tmp_path / "home")  # the restored copy must stand on its own
    served = mlflow.sklearn.load_model(again.get_model_version_download_uri("demo", copy.version))

    rows = generate(100).drop(columns=["customer_id", "event_timestamp", "churned"])
    assert (served.predict_proba(rows) == original.predict_proba(rows)).all()
    done = subprocess.run(
        [maestro, "restore", str(archive)], env=restored, capture_output=True, text=True
    )
    assert done.returncode == 2 and "the target state is not empty" in done.stdout


def test_prediction_log_and_batch_scores_go_to_postgres_tables(databases, tmp_path):
    """`MAESTRO_PREDICTION_LOG` and `MAESTRO_BATCH_OUTPUT` as postgresql:// URLs; an entry
    jsonb cannot hold (a NUL character) is set aside, and the entries beside it are written."""
    import numpy as np
    import pandas as pd
    from sqlalchemy import create_engine, text

    from maestro.logs.predictions import read_log
    from maestro.logs.scores import TABLE, write_scores
    from maestro.serving.predlog import Folders, PredictionLog

    url = databases["mlflow"]  # any empty database will do
    log = PredictionLog(url, Folders.of(url, tmp_path))
    body = b'[{"age": 30, "region": "north"}, {"age": 41, "region": null}]'
    names = ("age", "region")
    log.append(
        1.7e9, "r1", "demo", "3", "primary", 1.5, names, body, np.array([0.2, 0.7]).tobytes()
    )
    nul = b'{"age": 30, "region": "no\\u0000rth"}'
    log.append(1.7e9, "r0", "demo", "3", "primary", 1.5, names, nul, np.array([0.1]).tobytes())
    log.append(
        1.7e9, "r1", "demo", "4", "shadow", 1.1, names, body, np.array([0.25, 0.6]).tobytes()
    )
    log.close()
    assert (log.stats.written_rows, log.stats.dead_letter_entries) == (4, 1)
    (dead,) = (tmp_path / "prediction_log_dead_letter").glob("*.jsonl")
    assert '"request_id": "r0"' in dead.read_text() and "NUL" in dead.read_text()
    logged = read_log(url, "demo")
    assert len(logged) == 4
    assert sorted(logged["prediction"]) == [0.2, 0.25, 0.6, 0.7]
    assert sorted(logged["version"]) == ["3", "3", "4", "4"]
    assert logged["feature.age"].tolist() == [30, 41, 30, 41]
    assert logged["feature.region"].isna().sum() == 2

    settings = Settings(batch_output=url)
    scores = pd.DataFrame(
        {"customer_id": [1, 2], "prediction": [0.1, 0.9], "model_version": ["3", "3"]}
    )
    write_scores(settings, "demo", "2025-06-01", scores)
    write_scores(settings, "demo", "2025-06-01", scores.assign(model_version="4"))  # a re-run
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    with engine.connect() as conn:
        rows = conn.execute(text(f"SELECT model_version, count(*) FROM {TABLE} GROUP BY 1")).all()
    assert rows == [("4", 2)], "a re-run replaces its partition"


def test_monitoring_reads_windows_and_keeps_labels_in_postgres(databases, tmp_path):
    """The monitoring job's side of the PostgreSQL prediction log: a window of production
    rows, the requests it knows, and labels stored beside it (the table `feedback`)."""
    import datetime as dt

    import numpy as np
    import pandas as pd

    from maestro.logs.labels import labels_store, read_labels, store_labels
    from maestro.logs.predictions import has_log, known_requests, read_log
    from maestro.serving.predlog import Folders, PredictionLog

    url = databases["mlflow"]
    settings = Settings(prediction_log=url)
    assert not has_log(url, "demo")
    log = PredictionLog(url, Folders.of(url, tmp_path))
    body = b'[{"age": 30}, {"age": 41}]'
    for at, request_id, role in (
        (1.7e9, "old", "primary"),
        (1.8e9, "new", "primary"),
        (1.8e9, "new", "smoke"),
    ):
        log.append(
            at, request_id, "demo", "3", role, 1.0, ("age",), body, np.array([0.2, 0.7]).tobytes()
        )
    log.close()
    assert has_log(url, "demo") and not has_log(url, "other")
    start = dt.datetime.fromtimestamp(1.75e9, dt.UTC)
    window = read_log(url, "demo", start, None, role="primary")
    assert window["request_id"].tolist() == ["new", "new"]
    # what monitoring reads of a big window: one feature at a time, and the labelled requests
    one = read_log(url, "demo", start, None, role="primary", columns=["feature.age"])
    assert list(one.columns) == ["ts", "feature.age"] and one["feature.age"].tolist() == [30, 41]
    assert read_log(url, "demo", request_ids={"old"})["request_id"].tolist() == ["old", "old"]
    assert known_requests(url, "demo", ["old", "new", "nope"]) == {"old": 2, "new": 2}

    assert labels_store(settings).url == url
    labels = pd.DataFrame({"request_id": ["new", "new"], "row": [0, 1], "label": [1.0, 0.0]})
    assert store_labels(settings, "demo", labels) == 2
    store_labels(settings, "demo", labels.head(1).assign(label=0.0))  # a late correction
    kept = read_labels(settings, "demo").sort_values("row")
    assert kept["label"].tolist() == [0.0, 0.0]

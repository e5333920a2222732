"""Backup and restore on the embedded stores (SQLite, local folders), for real: a state with a
registered champion, aliases and tags, a serving plan, an Optuna study, a batch-scoring DAG run
in Airflow's database and its scores, archived, the state deleted, restored into another
folder, and served again. A truncated or tampered archive is refused before anything is
written, and a state that holds data is not overwritten without --force."""

from __future__ import annotations

import os
import shutil
import sqlite3
import tarfile
from pathlib import Path

import pandas as pd
import pytest

from maestro import tracking
from maestro.config import Settings
from maestro.platform.airflow_env import load_dag
from maestro.platform.backup import BackupError, backup, restore
from maestro.serving.plan import ModelPlan, Plan, Route, write_plan

pytestmark = pytest.mark.slow


def registry_state(settings: Settings) -> dict:
    mlc = tracking.client(settings)
    model = mlc.get_registered_model("demo")
    versions = mlc.search_model_versions("name = 'demo'")
    return {
        "aliases": dict(model.aliases),
        "versions": {str(v.version): dict(v.tags) for v in versions},
    }


def journal(home: Path):
    import optuna

    backend = optuna.storages.journal.JournalFileBackend(
        str(home / "optuna" / "demo-study.journal")
    )
    return optuna.storages.JournalStorage(backend)


def dag_runs(database: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(database) as conn:
        return conn.execute(
            "SELECT dag_id, run_id FROM dag_run WHERE dag_id = 'batch_score_demo'"
        ).fetchall()


@pytest.fixture
def state(settings, demo_champion, tmp_path, monkeypatch):
    """A state folder worth recovering; its Airflow database is a copy of the session's."""
    import optuna

    pipeline, frame = demo_champion
    mlc = tracking.client(settings)
    mlc.set_model_version_tag("demo", "1", "approval", "approved")
    mlc.set_registered_model_alias("demo", "previous", "1")
    write_plan(settings.plan_path, Plan({"demo": ModelPlan((Route("champion", 100),))}))
    (settings.home / "optuna").mkdir(parents=True)
    study = optuna.create_study(study_name="demo-study", storage=journal(settings.home))
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1) ** 2, n_trials=3)
    source = tmp_path / "day.parquet"
    frame.head(200).to_parquet(source)
    dag_run = load_dag("batch_score_demo", settings).test(
        run_conf={"day": "2025-01-03", "source": str(source)}
    )
    assert dag_run.state == "success"
    session_db = Path(os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].split(":///", 1)[1])
    airflow_db = settings.home / "airflow" / "airflow.db"
    airflow_db.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(session_db) as src, sqlite3.connect(airflow_db) as dst:
        src.backup(dst)
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{airflow_db}")
    return settings, pipeline, frame, dag_run.run_id


def test_a_backup_restores_into_an_empty_state_that_serves_the_same_predictions(
    state, tmp_path, monkeypatch
):
    import mlflow
    import optuna

    settings, pipeline, frame, run_id = state
    before = registry_state(settings)
    archive = tmp_path / "backups" / "maestro.tar.gz"
    manifest = backup(settings, archive, with_logs=True)
    assert {k for k, v in manifest["stores"].items() if v["kind"] != "absent"} >= {
        "mlflow",
        "mlflow_artifacts",
        "airflow",
        "serving",
        "optuna",
        "batch_scores",
    }
    shutil.rmtree(settings.home)  # the disaster: nothing of the old state is left

    home = tmp_path / "restored"
    target = Settings(home=home)
    monkeypatch.setenv(
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{home}/airflow/airflow.db"
    )
    restore(target, archive)
    assert registry_state(target) == before
    tracking.use_tracking(target)
    served = mlflow.sklearn.load_model("models:/demo@champion")
    features = frame.drop(columns=["customer_id", "event_timestamp", "churned"]).head(50)
    assert (served.predict_proba(features) == pipeline.predict_proba(features)).all()
    assert (home / "serving" / "plan.json").exists()
    study = optuna.load_study(study_name="demo-study", storage=journal(home))
    assert len(study.trials) == 3
    assert ("batch_score_demo", run_id) in dag_runs(home / "airflow" / "airflow.db")
    scores = pd.read_parquet(
        home / "batch_scores" / "demo" / "date=2025-01-03" / "predictions.parquet"
    )
    assert len(scores) == 200

    # the restored state holds data now: a second restore needs --force
    with pytest.raises(BackupError, match="the target state is not empty"):
        restore(target, archive)
    restore(target, archive, force=True)
    assert registry_state(target) == before


def test_a_truncated_or_tampered_archive_is_refused_and_nothing_is_written(state, tmp_path):
    settings, *_ = state
    archive = tmp_path / "maestro.tar.gz"
    backup(settings, archive)
    empty = Settings(home=tmp_path / "empty")

    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(BackupError, match="not a complete Maestro backup"):
        restore(empty, truncated)

    unpacked = tmp_path / "unpacked"
    with tarfile.open(archive) as tar:
        tar.extractall(unpacked, filter="data")
    plan = unpacked / "maestro-backup" / "serving" / "plan.json"
    plan.write_text(plan.read_text().replace("champion", "previous"))
    tampered = tmp_path / "tampered.tar.gz"
    with tarfile.open(tampered, "w:gz") as tar:
        tar.add(unpacked / "maestro-backup", arcname="maestro-backup")
    with pytest.raises(BackupError, match="serving/plan.json does not match its checksum"):
        restore(empty, tampered)
    assert not (tmp_path / "empty").exists(), "a refused restore wrote something"

"""The monitoring job for real: a champion of UCI Adult in a real MLflow registry, production
rows written by the prediction log's own writer process, labels in the feedback store, the
`monitor_adult_income` DAG run by Airflow, Evidently's report and workspace."""

from __future__ import annotations

import datetime as dt
import json
import time

import numpy as np
import orjson
import pandas as pd
import pytest

from maestro import tracking
from maestro.logs.labels import store_labels
from maestro.logs.predictions import read_log
from maestro.monitoring import approvals, stages
from maestro.monitoring.stages import MonitorError
from maestro.platform.airflow_env import load_dag
from maestro.serving.predlog import PredictionLog
from maestro.spec import get_spec
from tests.support import fit_lightgbm, needs_shared_data, register_version, webhook_receiver

pytestmark = pytest.mark.slow

SHIFTED = ["age", "sex"]
TARGET = "class"


def adult_rows(settings) -> pd.DataFrame:
    """UCI Adult as the spec reads it: normalised columns, 0/1 target."""
    from maestro.data import sources
    from maestro.spec import get_spec

    needs_shared_data("adult.csv")
    spec = get_spec("adult_income", settings)
    frame = sources.add_keys(sources.read_source(spec, settings), spec, "adult")
    return sources.conform(frame, spec, "adult")


def register_champion(settings, train: pd.DataFrame) -> str:
    """A small LightGBM of adult_income, registered as champion with its training set where
    the lineage tag `data_version` says (as the training DAG leaves it)."""
    spec = get_spec("adult_income", settings)
    pipeline = fit_lightgbm(spec, train, {"n_estimators": 40, "num_leaves": 15})
    version = register_version(settings, spec, pipeline, train)
    tracking.client(settings).set_model_version_tag(spec.name, version, "data_version", "testhash")
    folder = settings.home / "training_sets" / spec.name / "testhash"
    folder.mkdir(parents=True)
    cut = int(len(train) * 0.85)
    train.iloc[:cut].to_parquet(folder / "train.parquet")
    train.iloc[cut:].to_parquet(folder / "valid.parquet")
    return version


def serve_rows(settings, rows: pd.DataFrame, version: str, batch: int = 100) -> list[str]:
    """Log `rows` as the server does (bodies as sent, predictions as bytes) through the real
    writer process; returns the request ids, one per batch."""

    from maestro.models import load_version, scores
    from maestro.spec import get_spec

    spec = get_spec("adult_income", settings)
    model = load_version(f"models:/adult_income/{version}")
    log = PredictionLog(settings.prediction_log_location)
    ids = []
    names = tuple(spec.feature_names)
    for start in range(0, len(rows), batch):
        part = rows.iloc[start : start + batch][spec.feature_names]
        records = json.loads(part.to_json(orient="records"))
        predicted = scores(model, spec, part).astype("float64")
        request_id = f"req-{start}"
        body = orjson.dumps(records)
        log.append(
            time.time(),
            request_id,
            "adult_income",
            version,
            "primary",
            1.0,
            names,
            body,
            predicted.tobytes(),
        )
        ids.append(request_id)
    log.close()
    return ids


@pytest.fixture
def adult(settings):
    frame = adult_rows(settings)
    train, held_out = frame.iloc[:30000], frame.iloc[30000:32000].reset_index(drop=True)
    version = register_champion(settings, train)
    return settings, version, held_out


def test_held_out_rows_show_no_drift_and_two_shifted_columns_exactly_those(adult):
    settings, version, held_out = adult
    serve_rows(settings, held_out, version)
    verdict = stages.judge("adult_income", settings)
    assert verdict.status == "ok", verdict.reason
    assert verdict.drifted_columns == [] and verdict.rows == len(held_out)
    assert verdict.retrain is False

    # an hour later, the same people fifteen years older and with the sex mix reversed
    shifted = held_out.assign(
        age=held_out["age"] + 15,
        sex=held_out["sex"].map({"Male": "Female", "Female": "Male"}),
    )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=30)
    mlc = tracking.client(settings)
    for path in settings.home.joinpath("prediction_log").rglob("*.parquet"):
        path.unlink()  # judge only the shifted rows
    serve_rows(settings, shifted, version)
    verdict = stages.judge("adult_income", settings, later - dt.timedelta(hours=29))
    assert sorted(verdict.drifted_columns) == SHIFTED, verdict.reason

    # recorded where people look: the MLflow run with Evidently's report, the version's tags,
    # the Evidently workspace
    run = mlc.get_run(verdict.run_id)
    assert run.data.tags["model_version"] == version
    assert run.data.metrics["drift.age"] >= 0.1 and run.data.metrics["drift.fnlwgt"] < 0.1
    artifacts = {a.path for a in mlc.list_artifacts(verdict.run_id, "monitoring")}
    assert {"monitoring/drift.html", "monitoring/verdict.json"} <= artifacts
    tags = mlc.get_model_version("adult_income", version).tags
    assert tags["monitoring_run_id"] == verdict.run_id
    assert set(tags["monitoring_drifted_columns"].split(",")) == set(SHIFTED)
    from evidently.ui.workspace import Workspace

    workspace = Workspace(str(settings.evidently_dir))
    project = workspace.search_project("adult_income")[0]
    assert len(workspace.list_runs(project.id)) == 2


def test_labels_judge_quality_and_a_breach_asks_for_retraining(adult, use_specs):
    settings, version, held_out = adult
    settings = use_specs(
        {"adult_income": {"monitoring": {"performance": {"roc_auc": {"min": 0.95}}}}}
    )
    ids = serve_rows(settings, held_out, version)
    # labels for every row of half the requests; the truth of the other half never came
    labelled = [
        {"request_id": request_id, "row": row, "label": int(held_out[TARGET].iloc[first + row])}
        for request_id in ids[::2]
        for first in [int(request_id.removeprefix("req-"))]
        for row in range(100)
    ]
    assert store_labels(settings, "adult_income", pd.DataFrame(labelled)) == 1000
    verdict = stages.judge("adult_income", settings)
    assert verdict.labels == 1000
    assert 0.8 < verdict.performance["roc_auc"] < 0.95
    assert verdict.status == "performance" and verdict.retrain
    assert verdict.breached[0].startswith("roc_auc 0.")
    artifacts = {
        a.path for a in tracking.client(settings).list_artifacts(verdict.run_id, "monitoring")
    }
    assert "monitoring/quality.html" in artifacts


def test_too_few_rows_judge_nothing_and_bad_runs_fail_with_one_line(adult):
    settings, version, held_out = adult
    with pytest.raises(MonitorError, match="no prediction log"):
        stages.judge("adult_income", settings)
    serve_rows(settings, held_out.head(50), version, batch=10)
    verdict = stages.judge("adult_income", settings)
    assert verdict.status == "insufficient_data" and not verdict.retrain
    assert "50 logged rows" in verdict.reason and verdict.drifted_columns == []

    reference = settings.home / "training_sets" / "adult_income" / "testhash" / "train.parquet"
    reference.unlink()
    serve_rows(settings, held_out, version)
    with pytest.raises(MonitorError, match="reference missing: version 1's training set"):
        stages.judge("adult_income", settings)
    mlc = tracking.client(settings)
    mlc.delete_registered_model_alias("adult_income", "champion")
    with pytest.raises(MonitorError, match="no champion to monitor"):
        stages.judge("adult_income", settings)


def test_the_monitor_dag_signals_drift_on_the_asset(adult):
    from airflow.models.asset import AssetEvent
    from airflow.utils.session import create_session

    settings, version, held_out = adult
    shifted = held_out.assign(
        age=held_out["age"] + 15,
        hours_per_week=held_out["hours_per_week"] * 2,
        sex="Female",
        race="Other",
        workclass="Never-worked",
        capital_gain=held_out["capital_gain"] + 20000,
        education_num=np.minimum(held_out["education_num"] + 6, 16),
    )
    serve_rows(settings, shifted, version)
    dag = load_dag("monitor_adult_income", settings)
    started = dt.datetime.now(dt.UTC)
    dag_run = dag.test()
    assert dag_run.state == "success"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["signal_drift"] == "success" and states["watch_pipeline"] == "success"
    with create_session() as session:
        events = (
            session.query(AssetEvent)
            .filter(
                AssetEvent.source_dag_id == "monitor_adult_income", AssetEvent.timestamp >= started
            )
            .all()
        )
        assert len(events) == 1
        extra = events[0].extra
    assert extra["status"].startswith("drift") and extra["drift_share"] >= 0.5
    assert extra["report_run_id"] and extra["version"] == version
    logged = read_log(settings.prediction_log_location, "adult_income")
    assert len(logged) == len(held_out)


def test_a_version_waiting_too_long_is_reminded_once_and_a_failed_run_is_told(adult, use_specs):
    """Notifications reach a webhook on loopback: an approval waiting longer than the spec
    allows (once, however often the job runs) and a failed run (Airflow's notifier)."""
    from types import SimpleNamespace

    from maestro.orchestration.notify import RunOutcomeNotifier

    with webhook_receiver() as (url, received):
        notify = {"webhook": url, "approval_wait_hours": 0.0003}
        settings = use_specs({"adult_income": {"monitoring": {"notify": notify}}})
        version = adult[1]
        mlc = tracking.client(settings)
        mlc.set_model_version_tag("adult_income", version, "validation_status", "passed")
        time.sleep(1.2)  # longer than 0.0003 h
        first = approvals.watch_pipeline("adult_income", settings)
        again = approvals.watch_pipeline("adult_income", settings)
        assert first["pending"] == [version] and first["reminded"] == [version]
        assert again["reminded"] == []
        assert [m["event"] for m in received] == ["approval_waiting"]
        assert received[0]["version"] == version and "waited" in received[0]["message"]

        run = SimpleNamespace(dag_id="train_adult_income", run_id="manual__7")
        RunOutcomeNotifier(model="adult_income", state="failed").notify({"dag_run": run})
        RunOutcomeNotifier(model="adult_income", state="success").notify({"dag_run": run})
        assert [m["event"] for m in received] == ["approval_waiting", "run_failed"]
        assert received[1]["run_id"] == "manual__7"

"""The training DAG, run for real with `dag.test()` on real Feast, GX, Optuna and MLflow stores:
a spec goes in, a registered, traceable `challenger` comes out, and bad data moves nothing."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest

from maestro import tracking
from maestro.platform.airflow_env import load_dag
from maestro.spec import get_spec
from maestro.training import stages
from maestro.training.families import evaluate
from tests.support import deciding, needs_shared_data

pytestmark = pytest.mark.slow

LINEAGE = [
    "data_version",
    "data_rows",
    "training_window_start",
    "training_window_end",
    "feature_service",
    "feature_views",
    "airflow_dag_id",
    "airflow_run_id",
    "code_version",
    "best_trial",
    "best_family",
    "pipeline_run_id",
    "optuna_study",
]


def run_training(model: str, settings, trials: int = 4):
    """One run; a version that passes its gates is approved by tag, so no run waits."""
    dag = load_dag(f"train_{model}", settings)
    with deciding(settings, model, "approved"):
        return dag.test(run_conf={"trials": trials, "workers": 2})


def assert_traceable_challenger(model: str, settings, dag_run) -> dict:
    """The challenger carries its lineage, and reloading it reproduces its logged test metric."""
    spec = get_spec(model, settings)
    mlc = tracking.client(settings)
    version = mlc.get_model_version_by_alias(model, "challenger")
    for tag in LINEAGE:
        assert version.tags.get(tag), f"lineage tag {tag} missing on {model} v{version.version}"
    assert version.tags["airflow_dag_id"] == f"train_{model}"
    assert version.tags["airflow_run_id"] == dag_run.run_id
    assert version.tags["feature_service"] == spec.feature_service
    logged = mlc.get_run(version.run_id).data.metrics[f"test_{spec.metric.name}"]

    pipeline_run = version.tags["pipeline_run_id"]
    local = mlflow.artifacts.download_artifacts(run_id=pipeline_run, artifact_path="training_set")
    test = pd.read_parquet(f"{local}/test.parquet")
    reloaded = mlflow.pyfunc.load_model(f"models:/{model}@challenger")
    predicted = np.asarray(reloaded.predict(test[spec.feature_names]))
    if spec.task == "binary_classification":
        predicted = predicted[:, 1]
    again = evaluate(spec, test[spec.target.name].to_numpy(), predicted)[spec.metric.name]
    assert again == pytest.approx(logged, rel=1e-9)
    artifacts = {a.path for a in mlc.list_artifacts(pipeline_run)}
    assert {"data_validation", "training_set"} <= artifacts
    tune_runs = mlc.search_runs(
        [mlc.get_run(pipeline_run).info.experiment_id],
        filter_string="tags.`maestro.stage` = 'tune'",
    )
    plots = {a.path for r in tune_runs for a in mlc.list_artifacts(r.info.run_id, "plots")}
    assert "plots/optimization_history.html" in plots
    # every run the DAG run opened is closed (the evaluation's stayed RUNNING once)
    runs = mlc.search_runs(
        [mlc.get_run(pipeline_run).info.experiment_id],
        filter_string=f"tags.airflow_run_id = '{dag_run.run_id}'",
    )
    stages_ = {r.data.tags["maestro.stage"]: r.info.status for r in runs}
    assert stages_["evaluate"] == stages_["pipeline"] == "FINISHED", stages_
    assert "RUNNING" not in stages_.values(), stages_
    return {"version": version.version, "metric": logged}


def test_demo_dag_registers_a_traceable_challenger(small_specs):
    dag_run = run_training("demo", small_specs)
    assert dag_run.state == "success"
    result = assert_traceable_challenger("demo", small_specs, dag_run)
    assert result["metric"] > 0.6  # the demo's churn signal is learnable


def test_rerunning_a_run_registers_one_version(small_specs):
    run = stages.RunInfo("train_demo", "manual__rerun")
    h = stages.build_training_set(
        stages.materialize_features(
            stages.validate_data(stages.ingest("demo", run, small_specs), small_specs),
            small_specs,
        ),
        small_specs,
    )
    h = stages.start_tuning(h, small_specs, trials=3, workers=1)
    stages.tune_worker(h, 0, small_specs)
    h = stages.finish_tuning(h, small_specs)
    first = stages.register(stages.train_final(h, small_specs), small_specs)
    second = stages.register(stages.train_final(h, small_specs), small_specs)  # a re-run
    assert first.version == second.version == "1"
    assert len(tracking.client(small_specs).search_model_versions("name = 'demo'")) == 1


def test_bad_data_stops_before_training_and_moves_no_alias(small_specs, tmp_path, use_specs):
    first = run_training("demo", small_specs, trials=2)
    assert first.state == "success"
    mlc = tracking.client(small_specs)
    before = mlc.get_model_version_by_alias("demo", "challenger").version

    from maestro.data.synthetic import generate

    broken = generate(3000, seed=7)
    broken.loc[:99, "age"] = 150  # outside the spec's range
    source = tmp_path / "broken.csv"
    broken.to_csv(source, index=False)
    settings = use_specs(
        {"demo": {"source": {"format": "csv", "path": str(source)}}}, "broken_specs"
    )
    dag_run = run_training("demo", settings, trials=2)
    assert dag_run.state == "failed"
    states = {ti.task_id: ti.state for ti in dag_run.get_task_instances()}
    assert states["validate_data"] == "failed"
    tried = {ti.task_id: ti.try_number for ti in dag_run.get_task_instances()}
    assert tried["validate_data"] == 1  # bad data is not retried
    assert states["start_tuning"] == "upstream_failed" and states["register"] == "upstream_failed"
    assert mlc.get_model_version_by_alias("demo", "challenger").version == before
    assert len(mlc.search_model_versions("name = 'demo'")) == 1
    failed_run = mlc.search_runs(
        [tracking.experiment_id(settings, "demo")],
        filter_string=f"tags.airflow_run_id = '{dag_run.run_id}'",
    )[0]
    assert failed_run.data.tags["data_validation"] == "failed"
    assert failed_run.info.status == "FAILED"
    assert "data_validation" in {a.path for a in mlc.list_artifacts(failed_run.info.run_id)}


def test_adult_income_dag(settings):
    needs_shared_data("adult.csv")
    dag_run = run_training("adult_income", settings, trials=4)
    assert dag_run.state == "success"
    result = assert_traceable_challenger("adult_income", settings, dag_run)
    assert result["metric"] > 0.85  # ROC AUC on the census data
    version = tracking.client(settings).get_model_version("adult_income", result["version"])
    card = mlflow.artifacts.load_text(version.tags["model_card"].replace(".html", ".md"))
    for attribute in ("sex", "race", "age_band"):
        assert f"### {attribute}" in card, attribute  # per-slice metrics
    for rule in (
        "demographic_parity_difference",
        "equalized_odds_difference",
        "selection_rate_ratio",
    ):
        assert f"fairness:sex:{rule}" in card and f"fairness:race:{rule}" in card
    assert "| Female |" in card and "| Black |" in card
    assert version.tags["validation_status"] in ("passed", "failed")
    assert version.description.startswith(f"adult_income version {result['version']}")


def test_bike_demand_dag(settings):
    needs_shared_data("bike_hour.csv")
    dag_run = run_training("bike_demand", settings, trials=4)
    assert dag_run.state == "success"
    result = assert_traceable_challenger("bike_demand", settings, dag_run)
    assert result["metric"] < 120  # RMSE of rentals per hour (the target's std is about 180)


def test_a_drift_run_says_why_and_one_inside_the_cooldown_trains_nothing(use_specs):
    """The drift asset's event (here passed as a run parameter, as `maestro demo` does) becomes
    the version's lineage and its model card's reason; a second drift run within the spec's
    cooldown (24 h) stops at `check_trigger`, a success that trains nothing."""
    event = {
        "model": "demo",
        "version": "0",
        "status": "drift",
        "drifted_columns": ["age", "plan"],
        "breached": ["roc_auc 0.61 below its limit 0.65"],
        "report_run_id": "monitoring-run-1",
    }
    small_specs = use_specs(
        {
            "demo": {
                "source": {"rows": 3000},
                "governance": {"latency_budget_ms": 500},
                "monitoring": {"cooldown_hours": 24},
            }
        }
    )
    conf = {"trials": 3, "workers": 1, "trigger": "drift", "drift_event": event}
    dag = load_dag("train_demo", small_specs)
    with deciding(small_specs, "demo", "approved"):
        first = dag.test(run_conf=conf)
    assert first.state == "success"
    mlc = tracking.client(small_specs)
    version = mlc.get_model_version("demo", "1")
    assert version.tags["trigger"] == "drift"
    assert version.tags["drift_report_run_id"] == "monitoring-run-1"
    assert "drifted age, plan; roc_auc 0.61 below its limit 0.65" in version.tags["trigger_reason"]
    card = mlflow.artifacts.load_text(
        f"runs:/{version.tags['evaluation_run_id']}/model_card/model_card.md"
    )
    assert "Retrained because monitoring found drift" in card and "monitoring-run-1" in card

    again = dag.test(run_conf=conf)
    assert again.state == "success"
    states = {ti.task_id: ti.state for ti in again.get_task_instances()}
    assert states["check_trigger"] == "success"
    assert states["ingest"] == states["register"] == states["promote"] == "skipped"
    assert len(mlc.search_model_versions("name = 'demo'")) == 1
    [check] = [ti for ti in again.get_task_instances() if ti.task_id == "check_trigger"]
    assert "inside the cooldown" in check.xcom_pull(task_ids="check_trigger", key="not_trained")

"""Every DAG file imports cleanly, is cheap to parse and follows the house rules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from maestro.config import get_settings
from maestro.spec import load_spec, spec_paths
from tests.support import DAGS

HEAVY = [
    "mlflow",
    "feast",
    "great_expectations",
    "evidently",
    "optuna",
    "sklearn",
    "pandas",
    "numpy",
    "lightgbm",
    "fairlearn",
    "shap",
    "scipy",
]


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS))


def test_dag_files_import_without_errors(dagbag):
    assert dagbag.import_errors == {}
    assert dagbag.dags, "no DAG was found"


def test_one_training_dag_per_spec(dagbag):
    names = {load_spec(p).name for p in spec_paths(get_settings())}
    assert {d for d in dagbag.dag_ids if d.startswith("train_")} == {f"train_{n}" for n in names}


def test_dags_have_tags_retries_docs_and_one_active_run(dagbag):
    for dag in dagbag.dags.values():
        assert dag.tags, f"{dag.dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md) > 100, f"{dag.dag_id} has no doc_md"
        assert dag.max_active_runs == 1, dag.dag_id
        for task in dag.tasks:
            assert task.retries >= 1, f"{dag.dag_id}.{task.task_id} has no retries"
            assert task.retry_exponential_backoff, f"{dag.dag_id}.{task.task_id} has no backoff"


def test_tuning_is_mapped_over_worker_slots(dagbag):
    dag = dagbag.get_dag("train_demo")
    tune = dag.get_task("tune")
    from airflow.sdk.definitions.mappedoperator import MappedOperator

    assert isinstance(tune, MappedOperator)
    assert [t.task_id for t in dag.get_task("register").upstream_list] == ["train_final"]


@pytest.mark.parametrize("path", sorted(DAGS.glob("*.py")), ids=lambda p: p.name)
def test_dag_file_imports_nothing_heavy(path: Path):
    code = (
        "import sys, json, runpy; runpy.run_path(sys.argv[1]); "
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True
    )
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_broken_spec_hides_only_itself(use_specs):
    from airflow.dag_processing.dagbag import DagBag

    use_specs({"bike_demand": {"trials": 0}})
    try:
        bag = DagBag(dag_folder=str(DAGS))
    finally:
        get_settings.cache_clear()
    assert bag.import_errors == {}
    assert "train_demo" in bag.dag_ids and "train_bike_demand" not in bag.dag_ids


def test_one_monitoring_dag_per_spec_and_training_listens_to_drift(dagbag):
    names = {load_spec(p).name for p in spec_paths(get_settings())}
    assert {d for d in dagbag.dag_ids if d.startswith("monitor_")} == {
        f"monitor_{n}" for n in names
    }
    monitor = dagbag.get_dag("monitor_bike_demand")
    signal = monitor.get_task("signal_drift")
    assert [o.name for o in signal.outlets] == ["bike_demand_drift"]
    train = dagbag.get_dag("train_bike_demand")
    # the spec's cron schedule OR the drift asset
    assert "bike_demand_drift" in str(train.timetable.asset_condition)
    assert train.timetable.timetable.expression == "0 0 * * 0"  # @weekly
    assert train.get_task("check_trigger").downstream_task_ids == {"ingest"}

"""MLflow as the system of record: the client, each model's experiment, the pipeline run that
records one Airflow run and its child runs, and the code version. The registry's versions and
aliases are `maestro.registry`."""

from __future__ import annotations

import subprocess
from functools import lru_cache
from typing import Any

from maestro.config import Settings


def use_tracking(settings: Settings) -> None:
    """Point MLflow's process-wide URIs at the platform's tracking store and registry: the
    fluent API (`mlflow.start_run`, `mlflow.artifacts`, `models:/` URIs) reads them."""
    import mlflow

    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)


def client(settings: Settings) -> Any:
    """A client of the platform's tracking store and registry; it also calls `use_tracking`,
    since what is done with a client is mostly followed by fluent calls on the same store."""
    from mlflow import MlflowClient

    use_tracking(settings)
    return MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)


def experiment_id(settings: Settings, model: str) -> str:
    """The model's experiment, created on first use with its artifacts under the artifact root
    (or, through an MLflow server, where the server keeps them: it serves them to clients)."""
    mlc = client(settings)
    found = mlc.get_experiment_by_name(model)
    if found is not None:
        return found.experiment_id
    try:
        location = None if settings.tracking_server else f"{settings.artifact_root}/{model}"
        return mlc.create_experiment(model, artifact_location=location)
    except Exception:  # created meanwhile by a parallel task: use that one
        found = mlc.get_experiment_by_name(model)
        if found is None:
            raise
        return found.experiment_id


def pipeline_run(settings: Settings, model: str, dag_id: str, run_id: str) -> str:
    """The MLflow run that records one Airflow run; a retried or re-run task reuses it."""
    mlc = client(settings)
    exp = experiment_id(settings, model)
    found = mlc.search_runs(
        [exp],
        filter_string=f"tags.`maestro.stage` = 'pipeline' and tags.airflow_run_id = '{run_id}' "
        f"and tags.airflow_dag_id = '{dag_id}'",
        max_results=1,
    )
    if found:
        return found[0].info.run_id
    run = mlc.create_run(
        exp,
        run_name=f"{dag_id} {run_id}",
        tags={
            "maestro.stage": "pipeline",
            "airflow_dag_id": dag_id,
            "airflow_run_id": run_id,
            "code_version": code_version(settings),
        },
    )
    return run.info.run_id


def child_run(settings: Settings, parent_run_id: str, name: str, stage: str) -> str:
    mlc = client(settings)
    parent = mlc.get_run(parent_run_id)
    run = mlc.create_run(
        parent.info.experiment_id,
        run_name=name,
        tags={
            "mlflow.parentRunId": parent_run_id,
            "maestro.stage": stage,
            **{k: v for k, v in parent.data.tags.items() if k.startswith("airflow_")},
        },
    )
    return run.info.run_id


def fail_open_runs(settings: Settings, model: str, dag_id: str, run_id: str) -> int:
    """Mark FAILED every MLflow run of one Airflow run that is still RUNNING (a failed task
    leaves its run, and its pipeline's, open); returns how many."""
    mlc = client(settings)
    open_runs = mlc.search_runs(
        [experiment_id(settings, model)],
        filter_string=f"tags.airflow_run_id = '{run_id}' and tags.airflow_dag_id = '{dag_id}' "
        "and attributes.status = 'RUNNING'",
    )
    for run in open_runs:
        mlc.set_terminated(run.info.run_id, "FAILED")
    return len(open_runs)


def code_version(settings: Settings) -> str:
    """The git commit of the project (with `-dirty` for uncommitted changes), else `unknown`."""
    return _git_commit(str(settings.project_dir))


@lru_cache(maxsize=4)
def _git_commit(project_dir: str) -> str:
    try:
        sha = subprocess.run(
            ["git", "-C", project_dir, "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", project_dir, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha

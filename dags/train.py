"""
### Train `{model}`

{description}

Declared in `include/specs/{model}.yaml`. Each run: **ingest** the window into a versioned
snapshot, **validate_data** (Great Expectations), **materialize_features** (Feast,
`feature_repo/{model}.py`), **build_training_set** (point in time, split by time), **tune**
(one Optuna study over `workers` mapped tasks, `trials` in all), **train_final**, **register**
(lineage tags, alias `challenger`), **evaluation** (thresholds, champion change, slices,
fairness, serving check, SHAP, model card, verdict), **request_approval** only if every gate
passed (Required Actions, or the version's `approval` tag; a timeout rejects) and **promote**
(`champion` moves, the former one becomes `previous`, the asset `{model}_champion` gets an
event). Tasks hand each other typed references (`maestro.handles`), never data.
"""

from __future__ import annotations

import importlib
from datetime import timedelta

from airflow.sdk import Param, TaskGroup, dag, task

from maestro.config import get_settings
from maestro.errors import fail_fast
from maestro.handles import CandidateVersion, TrainingRun
from maestro.orchestration.approval import ModelApprovalOperator
from maestro.orchestration.assets import champion_asset
from maestro.orchestration.defaults import START_DATE, default_args
from maestro.spec import ModelSpec, loadable_specs


def stage(package: str, name: str, doc: str):
    """A task running `maestro.<package>.stages.<name>(handle, settings)`: one typed handle in,
    one out; bad input fails it at once, without retries."""

    def run(handle):
        stages = importlib.import_module(f"maestro.{package}.stages")
        with fail_fast():
            return getattr(stages, name)(handle, get_settings())

    run.__doc__ = doc
    return task(python_callable=run, task_id=name)


def build_training_dag(spec: ModelSpec):
    """The training DAG of one model spec."""
    champion = champion_asset(spec.name)

    @dag(
        dag_id=f"train_{spec.name}",
        description=spec.description or f"Train {spec.name}",
        doc_md=__doc__.format(model=spec.name, description=spec.description),
        schedule=spec.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(spec.owner),
        dagrun_timeout=timedelta(minutes=spec.timeout_minutes),
        tags=["maestro", "training", spec.name, *spec.tags],
        params={
            "trials": Param(spec.trials, type="integer", minimum=1, description="Trial budget"),
            "workers": Param(
                spec.workers or get_settings().tune_workers,
                type="integer",
                minimum=1,
                maximum=16,
                description="Parallel trial workers",
            ),
        },
    )
    def training():
        @task
        def ingest(dag_run=None, data_interval_end=None) -> TrainingRun:
            """Snapshot the source for the run's window."""
            from maestro.training import stages

            end = data_interval_end.isoformat() if data_interval_end else None
            with fail_fast():
                run = stages.RunInfo(dag_run.dag_id, dag_run.run_id, end)
                return stages.ingest(spec.name, run, get_settings())

        validate_data = stage(
            "training", "validate_data", "Great Expectations suite; stop on failure."
        )
        materialize_features = stage(
            "training", "materialize_features", "Feast apply, materialize."
        )
        build_training_set = stage("training", "build_training_set", "Point-in-time, time split.")

        @task
        def start_tuning(handle: TrainingRun, params=None) -> TrainingRun:
            """Create the Optuna study and the MLflow tuning run."""
            from maestro.training import stages

            with fail_fast():
                settings = get_settings()
                return stages.start_tuning(handle, settings, params["trials"], params["workers"])

        @task
        def worker_slots(handle: TrainingRun) -> list[int]:
            """One slot per parallel trial worker."""
            return list(range(handle.workers))

        @task
        def tune(handle: TrainingRun, worker: int) -> int:
            """Run trials of the shared study until its budget is spent."""
            from maestro.training import stages

            with fail_fast():
                return stages.tune_worker(handle, worker, get_settings())

        finish_tuning = stage("training", "finish_tuning", "Pick the best trial; log plots.")
        train_final = stage("training", "train_final", "Refit the best; log model and metrics.")
        register = stage("training", "register", "Register, tag lineage, alias challenger.")
        evaluate = stage("governance", "evaluate", "Metrics, champion change, slices, fairness.")
        validate_serving = stage("governance", "validate_serving", "Load as served; time it.")
        explain = stage("governance", "explain", "Global SHAP importance (table and plot).")
        verdict = stage("governance", "verdict", "Verdict tags, model card, description.")
        not_promoted = stage("governance", "not_promoted", "Failed a gate: nothing is asked.")

        @task.branch
        def gate(handle: CandidateVersion) -> str:
            """Ask a human only when every gate passed."""
            return "request_approval" if handle.validation_status == "passed" else "not_promoted"

        @task(outlets=[champion])
        def promote(handle: CandidateVersion, outlet_events=None) -> dict:
            """Move champion to the approved version; tell subscribers (deployment)."""
            from maestro.governance import decisions

            with fail_fast():
                done = decisions.promote_approved(get_settings(), handle.model, handle.version)
            outlet_events[champion].extra = done
            return done

        study = start_tuning(build_training_set(materialize_features(validate_data(ingest()))))
        trials = tune.partial(handle=study).expand(worker=worker_slots(study))
        registered = register(train_final(trials >> finish_tuning(study)))
        with TaskGroup("evaluation"):
            evaluated = evaluate(registered)
            judged = verdict(evaluated)
            [validate_serving(evaluated), explain(evaluated)] >> judged
        pulled = "ti.xcom_pull(task_ids='evaluation.verdict')"
        approval = ModelApprovalOperator(
            task_id="request_approval",
            subject=f"Promote {spec.name} version {{{{ {pulled}.version }}}} to champion?",
            body=f"{{{{ {pulled}.approval_request }}}}",
            model=spec.name,
            version=f"{{{{ {pulled}.version }}}}",
            approvers=spec.governance.approvers,
            response_timeout=timedelta(hours=spec.governance.approval_timeout_hours),
        )
        gate(judged) >> [approval, not_promoted(judged)]
        approval >> promote(judged)

    return training()


for _spec in loadable_specs(get_settings()):
    globals()[f"train_{_spec.name}"] = build_training_dag(_spec)

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

Runs on its schedule, by hand (`trigger`: manual or ci), or on an event of the asset
`{model}_drift` from `monitor_{model}`; a drift-triggered run inside the spec's cooldown after
the last training ends at **check_trigger**, a success with the reason in its log.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import TaskGroup, dag, task

from maestro import lineage
from maestro.config import get_settings
from maestro.errors import fail_fast
from maestro.handles import CandidateVersion, TrainingRun, TrainingTrigger
from maestro.orchestration.assets import champion_asset
from maestro.orchestration.defaults import START_DATE, default_args
from maestro.orchestration.lineage import record
from maestro.orchestration.notify import outcome_callbacks
from maestro.orchestration.training import (
    approval_request,
    stage,
    training_params,
    training_schedule,
    why_this_run,
)
from maestro.spec import ModelSpec, loadable_specs
from maestro.vocabulary import PASSED, TRAINING_QUEUE


def build_training_dag(spec: ModelSpec):
    """The training DAG of one model spec."""
    champion = champion_asset(spec.name)

    @dag(
        dag_id=f"train_{spec.name}",
        description=spec.description or f"Train {spec.name}",
        doc_md=__doc__.format(model=spec.name, description=spec.description),
        schedule=training_schedule(spec),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(spec.owner),
        **outcome_callbacks(spec.name),
        dagrun_timeout=timedelta(minutes=spec.timeout_minutes),
        tags=["maestro", "training", spec.name, *spec.tags],
        params=training_params(spec),
    )
    def training():
        @task.short_circuit
        def check_trigger(params=None, dag_run=None, triggering_asset_events=None, ti=None):
            """Why this run; a drift-triggered one inside the cooldown stops here."""
            return why_this_run(spec, params, dag_run, triggering_asset_events, ti)

        @task
        def ingest(why: dict, dag_run=None, data_interval_end=None) -> TrainingRun:
            """Snapshot the source for the run's window."""
            from maestro.training import stages

            end = data_interval_end.isoformat() if data_interval_end else None
            settings = get_settings()
            with fail_fast():
                trigger = TrainingTrigger(**why)
                run = stages.RunInfo(dag_run.dag_id, dag_run.run_id, end, trigger)
                handle = stages.ingest(spec.name, run, settings)
            record((lineage.sources(spec, settings), [lineage.snapshot(handle)]))
            return handle

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

        @task(queue=TRAINING_QUEUE)
        def tune(handle: TrainingRun, worker: int) -> int:
            """Run trials of the shared study until its budget is spent."""
            from maestro.training import stages

            with fail_fast():
                return stages.tune_worker(handle, worker, get_settings())

        @task.branch
        def gate(handle: CandidateVersion) -> str:
            """Ask a human only when every gate passed."""
            return "request_approval" if handle.validation_status == PASSED else "not_promoted"

        @task(outlets=[champion])
        def promote(handle: CandidateVersion, outlet_events=None) -> dict:
            """Move champion to the approved version; tell subscribers (deployment)."""
            from maestro.governance import decisions

            settings = get_settings()
            with fail_fast():
                done = decisions.promote_approved(settings, handle.model, handle.version)
            outlet_events[champion].extra = done
            record(([lineage.model_version(settings, handle.model, handle.version)], []))
            return done

        validate = stage("training", "validate_data", "Great Expectations suite; stop on failure.")
        features = stage("training", "materialize_features", "Feast apply, materialize.")
        training_set = stage("training", "build_training_set", "Point-in-time, time split.")
        best = stage("training", "finish_tuning", "Pick the best trial; log plots.")
        final = stage("training", "train_final", "Refit the best; log model and metrics.")
        register = stage("training", "register", "Register, tag lineage, alias challenger.")
        evaluate = stage("governance", "evaluate", "Metrics, champion change, slices, fairness.")
        validate_serving = stage("governance", "validate_serving", "Load as served; time it.")
        explain = stage("governance", "explain", "Global SHAP importance (table and plot).")
        verdict = stage("governance", "verdict", "Verdict tags, model card, description.")
        not_promoted = stage("governance", "not_promoted", "Failed a gate: nothing is asked.")

        snapshot = ingest(check_trigger())
        study = start_tuning(training_set(features(validate(snapshot))))
        trials = tune.partial(handle=study).expand(worker=worker_slots(study))
        registered = register(final.override(queue=TRAINING_QUEUE)(trials >> best(study)))
        with TaskGroup("evaluation"):
            evaluated = evaluate(registered)
            judged = verdict(evaluated)
            [validate_serving(evaluated), explain(evaluated)] >> judged
        approval = approval_request(spec, "evaluation.verdict")
        gate(judged) >> [approval, not_promoted(judged)]
        approval >> promote(judged)

    return training()


for _spec in loadable_specs(get_settings()):
    globals()[f"train_{_spec.name}"] = build_training_dag(_spec)

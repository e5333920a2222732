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

import importlib
import logging
from datetime import timedelta

from airflow.sdk import Param, TaskGroup, dag, task

from maestro.config import get_settings
from maestro.errors import fail_fast
from maestro.handles import CandidateVersion, TrainingRun, TrainingTrigger
from maestro.orchestration.approval import ModelApprovalOperator
from maestro.orchestration.assets import champion_asset, drift_asset
from maestro.orchestration.defaults import START_DATE, default_args
from maestro.orchestration.notify import outcome_callbacks
from maestro.spec import ModelSpec, loadable_specs
from maestro.vocabulary import TRAINING_QUEUE


def stage(package: str, name: str, doc: str):
    """A task running `maestro.<package>.stages.<name>(handle, settings)`: one typed handle in,
    one out; bad input fails it at once, without retries."""

    def run(handle):
        stages = importlib.import_module(f"maestro.{package}.stages")
        with fail_fast():
            return getattr(stages, name)(handle, get_settings())

    run.__doc__ = doc
    return task(python_callable=run, task_id=name)


def training_schedule(spec: ModelSpec):
    """The spec's cron schedule OR its drift asset (when drift retrains), or either alone."""
    if not (spec.monitoring.enabled and spec.monitoring.retrain):
        return spec.schedule
    if spec.schedule is None:
        return drift_asset(spec.name)
    from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable

    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(spec.schedule, timezone="UTC"),
        assets=drift_asset(spec.name),
    )


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
        params={
            "trials": Param(spec.trials, type="integer", minimum=1, description="Trial budget"),
            "workers": Param(
                spec.workers or get_settings().tune_workers,
                type="integer",
                minimum=1,
                maximum=16,
                description="Parallel trial workers",
            ),
            "trigger": Param(
                "manual", enum=["manual", "ci", "drift"], description="Why (manual runs)"
            ),
            "drift_event": Param(
                None, type=["null", "object"], description="A drift run's verdict (drift runs)"
            ),
        },
    )
    def training():
        @task.short_circuit
        def check_trigger(params=None, dag_run=None, triggering_asset_events=None, ti=None):
            """Why this run; a drift-triggered one inside the cooldown stops here."""
            from maestro.training import stages

            events = [
                dict(event.extra)
                for found in (triggering_asset_events or {}).values()
                for event in found
            ]
            events += [params["drift_event"]] if params.get("drift_event") else []
            run_type = getattr(dag_run.run_type, "value", str(dag_run.run_type))
            with fail_fast():
                why = stages.why_train(
                    spec.name, get_settings(), run_type, params["trigger"], events
                )
            if isinstance(why, str):  # nothing to train: say why in the task's log and XCom
                logging.getLogger("airflow.task").info(why)
                ti.xcom_push(key="not_trained", value=why)
                return False
            return why.model_dump()

        @task
        def ingest(why: dict, dag_run=None, data_interval_end=None) -> TrainingRun:
            """Snapshot the source for the run's window."""
            from maestro.training import stages

            end = data_interval_end.isoformat() if data_interval_end else None
            with fail_fast():
                trigger = TrainingTrigger(**why)
                run = stages.RunInfo(dag_run.dag_id, dag_run.run_id, end, trigger)
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

        @task(queue=TRAINING_QUEUE)
        def tune(handle: TrainingRun, worker: int) -> int:
            """Run trials of the shared study until its budget is spent."""
            from maestro.training import stages

            with fail_fast():
                return stages.tune_worker(handle, worker, get_settings())

        finish_tuning = stage("training", "finish_tuning", "Pick the best trial; log plots.")
        train_final = stage(
            "training", "train_final", "Refit the best; log model and metrics."
        ).override(queue=TRAINING_QUEUE)
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

        snapshot = ingest(check_trigger())
        study = start_tuning(build_training_set(materialize_features(validate_data(snapshot))))
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

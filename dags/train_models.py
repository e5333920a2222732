"""
### Train `{model}`

{description}

Declared in `include/specs/{model}.yaml`. Each run turns the spec's source into a tuned,
registered, traceable MLflow model version with alias `challenger`:

1. **ingest** the run's window into a content-addressed snapshot (the data version);
2. **validate_data** with the spec's Great Expectations suite (Data Docs go to MLflow);
3. **materialize_features** through Feast (`feature_repo/{model}.py`);
4. **build_training_set**: point-in-time features, time-ordered train/validation/test;
5. **tune**: an Optuna study shared by `workers` mapped tasks until `trials` are spent;
6. **train_final**: refit the best configuration, log model, signature and test metrics;
7. **register** the version with its lineage tags and alias it `challenger`;
8. **evaluation**: value and champion-change thresholds, sliced metrics and fairness gates,
   a serving check in a fresh process, SHAP importance, the model card and the verdict tags;
9. **request_approval** (only if every gate passed): the model's approvers approve or reject in
   Required Actions, or by the version's `approval` tag (`maestro approve`); a timeout rejects;
10. **promote**: `champion` moves to the version, the former champion becomes `previous`, and
   the asset `{model}_champion` gets an event.

Tasks hand each other references (paths, run ids), never data.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, TaskGroup, dag, task
from maestro.airflow_api import champion_asset
from maestro.approval import ModelApprovalOperator
from maestro.config import get_settings
from maestro.errors import fail_fast
from maestro.spec import ModelSpec, loadable_specs

log = logging.getLogger(__name__)

DEFAULT_ARGS = {
    "owner": "maestro",
    "retries": 2,
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": 2.0,
    "max_retry_delay": timedelta(minutes=10),
}


def build_training_dag(spec: ModelSpec):
    """The training DAG of one model spec."""
    settings = get_settings()
    workers = spec.workers or settings.tune_workers

    @dag(
        dag_id=f"train_{spec.name}",
        description=spec.description or f"Train {spec.name}",
        doc_md=__doc__.format(model=spec.name, description=spec.description),
        schedule=spec.schedule,
        start_date=datetime(2025, 1, 1),
        catchup=False,
        max_active_runs=1,
        default_args={**DEFAULT_ARGS, "owner": spec.owner},
        dagrun_timeout=timedelta(minutes=spec.timeout_minutes),
        tags=["maestro", "training", spec.name, *spec.tags],
        params={
            "trials": Param(spec.trials, type="integer", minimum=1, description="Trial budget"),
            "workers": Param(
                workers, type="integer", minimum=1, maximum=16, description="Parallel trial workers"
            ),
        },
    )
    def training():
        @task
        def ingest(dag_run=None, data_interval_end=None) -> dict:
            """Snapshot the source for the run's window."""
            from maestro import pipeline

            end = data_interval_end.isoformat() if data_interval_end else None
            run = pipeline.RunInfo(dag_run.dag_id, dag_run.run_id, end)
            with fail_fast():
                return pipeline.ingest(spec.name, run, get_settings())

        @task
        def validate_data(handle: dict) -> dict:
            """Run the spec's Great Expectations suite; stop on failure."""
            from maestro import pipeline

            with fail_fast():
                return pipeline.validate_data(handle, get_settings())

        @task
        def materialize_features(handle: dict) -> dict:
            """Feast apply and materialize the window online."""
            from maestro import pipeline

            with fail_fast():
                return pipeline.materialize_features(handle, get_settings())

        @task
        def build_training_set(handle: dict) -> dict:
            """Point-in-time features from Feast, split by time."""
            from maestro import pipeline

            with fail_fast():
                return pipeline.build_training_set(handle, get_settings())

        @task
        def start_tuning(handle: dict, params=None) -> dict:
            """Create the Optuna study and the MLflow tuning run."""
            from maestro import pipeline

            with fail_fast():
                return pipeline.start_tuning(
                    handle, get_settings(), params["trials"], params["workers"]
                )

        @task
        def worker_slots(handle: dict) -> list[int]:
            """One slot per parallel trial worker."""
            return list(range(handle["workers"]))

        @task
        def tune(handle: dict, worker: int) -> int:
            """Run trials of the shared study until its budget is spent."""
            from maestro import pipeline

            with fail_fast():
                return pipeline.tune_worker(handle, worker, get_settings())

        @task
        def finish_tuning(handle: dict) -> dict:
            """Pick the best trial; log plots."""
            from maestro import pipeline

            with fail_fast():
                return pipeline.finish_tuning(handle, get_settings())

        @task
        def train_final(handle: dict) -> dict:
            """Refit the best configuration and log the model."""
            from maestro import pipeline

            with fail_fast():
                return pipeline.train_final(handle, get_settings())

        @task
        def register(handle: dict) -> dict:
            """Register the version, tag its lineage, alias it challenger."""
            from maestro import pipeline

            with fail_fast():
                return pipeline.register(handle, get_settings())

        @task
        def evaluate(handle: dict) -> dict:
            """Metrics, champion comparison, sliced metrics and fairness on the test split."""
            from maestro import governance

            with fail_fast():
                return governance.evaluate(handle, get_settings())

        @task
        def validate_serving(handle: dict) -> dict:
            """Load the version as serving will, in a fresh process; compare and time it."""
            from maestro import governance

            with fail_fast():
                return governance.validate_serving(handle, get_settings())

        @task
        def explain(handle: dict) -> dict:
            """Global SHAP importance (table and plot)."""
            from maestro import governance

            with fail_fast():
                return governance.explain(handle, get_settings())

        @task
        def verdict(handle: dict, checked: dict, explained: dict) -> dict:
            """Verdict tags, model card and description on the version."""
            from maestro import governance

            with fail_fast():
                return governance.verdict(handle, get_settings())

        @task.branch
        def gate(handle: dict) -> str:
            """Ask a human only when every gate passed."""
            return "request_approval" if handle["validation_status"] == "passed" else "not_promoted"

        @task
        def not_promoted(handle: dict) -> None:
            """The version failed a gate: no approval is requested, no alias moves."""
            log.warning(
                "%s version %s not promoted: failed %s",
                handle["model"],
                handle["version"],
                ", ".join(handle["failed_checks"]),
            )

        asset_name, asset_uri = champion_asset(spec.name)
        champion = Asset(name=asset_name, uri=asset_uri)

        @task(outlets=[champion])
        def promote(handle: dict, outlet_events=None) -> dict:
            """Move champion to the approved version; tell subscribers (deployment)."""
            from maestro import governance

            settings = get_settings()
            with fail_fast():
                decision = governance.decision_of(settings, handle["model"], handle["version"])
                done = governance.promote(
                    settings,
                    handle["model"],
                    handle["version"],
                    decision["by"],
                    decision["comment"],
                )
            outlet_events[champion].extra = done
            return done

        study = start_tuning(build_training_set(materialize_features(validate_data(ingest()))))
        trials = tune.partial(handle=study).expand(worker=worker_slots(study))
        best = finish_tuning(study)
        trials >> best
        registered = register(train_final(best))
        with TaskGroup("evaluation"):
            evaluated = evaluate(registered)
            judged = verdict(evaluated, validate_serving(evaluated), explain(evaluated))
        pulled = "ti.xcom_pull(task_ids='evaluation.verdict')"
        approval = ModelApprovalOperator(
            task_id="request_approval",
            subject=f"Promote {spec.name} version {{{{ {pulled}['version'] }}}} to champion?",
            body=f"{{{{ {pulled}['approval_request'] }}}}",
            model=spec.name,
            version=f"{{{{ {pulled}['version'] }}}}",
            approvers=spec.governance.approvers,
            response_timeout=timedelta(hours=spec.governance.approval_timeout_hours),
            poke_interval=settings.approval_poll_seconds,
        )
        gate(judged) >> [approval, not_promoted(judged)]
        approval >> promote(judged)

    return training()


for _spec in loadable_specs(get_settings()):
    globals()[f"train_{_spec.name}"] = build_training_dag(_spec)

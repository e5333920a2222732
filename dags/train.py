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
8. **evaluation**: thresholds, champion change, sliced metrics and fairness gates, a serving
   check in a fresh process, SHAP importance, the model card and the verdict tags;
9. **request_approval** (only if every gate passed): the approvers answer in Required Actions
   or by the version's `approval` tag (`maestro approve`); a timeout rejects;
10. **promote**: `champion` moves to the version, the former champion becomes `previous`, and
   the asset `{model}_champion` gets an event.

Tasks hand each other typed references (`maestro.handles`), never data.
"""

from __future__ import annotations

from datetime import timedelta

from airflow.sdk import Param, TaskGroup, dag, task

from maestro.config import get_settings
from maestro.errors import fail_fast
from maestro.handles import CandidateVersion, TrainingRun
from maestro.orchestration.approval import ModelApprovalOperator
from maestro.orchestration.assets import champion_asset
from maestro.orchestration.defaults import START_DATE, default_args
from maestro.spec import ModelSpec, loadable_specs


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

        @task
        def validate_data(handle: TrainingRun) -> TrainingRun:
            """Run the spec's Great Expectations suite; stop on failure."""
            from maestro.training import stages

            with fail_fast():
                return stages.validate_data(handle, get_settings())

        @task
        def materialize_features(handle: TrainingRun) -> TrainingRun:
            """Feast apply and materialize the window online."""
            from maestro.training import stages

            with fail_fast():
                return stages.materialize_features(handle, get_settings())

        @task
        def build_training_set(handle: TrainingRun) -> TrainingRun:
            """Point-in-time features from Feast, split by time."""
            from maestro.training import stages

            with fail_fast():
                return stages.build_training_set(handle, get_settings())

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

        @task
        def finish_tuning(handle: TrainingRun) -> TrainingRun:
            """Pick the best trial; log plots."""
            from maestro.training import stages

            with fail_fast():
                return stages.finish_tuning(handle, get_settings())

        @task
        def train_final(handle: TrainingRun) -> TrainingRun:
            """Refit the best configuration and log the model."""
            from maestro.training import stages

            with fail_fast():
                return stages.train_final(handle, get_settings())

        @task
        def register(handle: TrainingRun) -> CandidateVersion:
            """Register the version, tag its lineage, alias it challenger."""
            from maestro.training import stages

            with fail_fast():
                return stages.register(handle, get_settings())

        @task
        def evaluate(handle: CandidateVersion) -> CandidateVersion:
            """Metrics, champion comparison, sliced metrics and fairness on the test split."""
            from maestro.governance import stages

            with fail_fast():
                return stages.evaluate(handle, get_settings())

        @task
        def validate_serving(handle: CandidateVersion) -> CandidateVersion:
            """Load the version as serving will, in a fresh process; compare and time it."""
            from maestro.governance import stages

            with fail_fast():
                return stages.validate_serving(handle, get_settings())

        @task
        def explain(handle: CandidateVersion) -> CandidateVersion:
            """Global SHAP importance (table and plot)."""
            from maestro.governance import stages

            with fail_fast():
                return stages.explain(handle, get_settings())

        @task
        def verdict(handle: CandidateVersion, checked, explained) -> CandidateVersion:
            """Verdict tags, model card and description on the version."""
            from maestro.governance import stages

            with fail_fast():
                return stages.verdict(handle, get_settings())

        @task.branch
        def gate(handle: CandidateVersion) -> str:
            """Ask a human only when every gate passed."""
            return "request_approval" if handle.validation_status == "passed" else "not_promoted"

        @task
        def not_promoted(handle: CandidateVersion) -> None:
            """The version failed a gate: no approval is requested, no alias moves."""
            failed = ", ".join(handle.failed_checks)
            print(f"{handle.model} version {handle.version} not promoted: failed {failed}")

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
            judged = verdict(evaluated, validate_serving(evaluated), explain(evaluated))
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

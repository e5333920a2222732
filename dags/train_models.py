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
7. **register** the version with its lineage tags and alias it `challenger`.

Tasks hand each other references (paths, run ids), never data.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from airflow.sdk import Param, dag, task
from maestro.config import get_settings
from maestro.errors import fail_fast
from maestro.spec import ModelSpec, SpecError, load_spec, spec_paths

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

        study = start_tuning(build_training_set(materialize_features(validate_data(ingest()))))
        trials = tune.partial(handle=study).expand(worker=worker_slots(study))
        best = finish_tuning(study)
        trials >> best
        register(train_final(best))

    return training()


for _path in spec_paths(get_settings()):
    try:
        _spec = load_spec(_path)
    except SpecError as error:  # one broken spec must not hide the other models' DAGs
        log.error("skipping model spec: %s", error)
        continue
    globals()[f"train_{_spec.name}"] = build_training_dag(_spec)

"""
### Batch scoring with `{model}`

Scores one day of the spec's source (or a given file) with the champion and writes the
predictions with the model version on every row (parquet per day, or a PostgreSQL table).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from maestro.config import get_settings
from maestro.errors import fail_fast
from maestro.orchestration.defaults import START_DATE, default_args
from maestro.spec import ModelSpec, loadable_specs


def build_batch_dag(spec: ModelSpec):
    """The batch scoring DAG of one model: daily for scheduled models, else by hand."""
    model = spec.name

    @dag(
        dag_id=f"batch_score_{model}",
        doc_md=__doc__.format(model=model),
        schedule="@daily" if spec.schedule else None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(spec.owner, retries=1),
        tags=["maestro", "batch", model],
        params={
            "day": Param("", type="string", description="YYYY-MM-DD; empty: the run's day"),
            "source": Param(
                "", type="string", description="A parquet/CSV file; empty: the spec's source"
            ),
        },
    )
    def batch_score():
        @task
        def score() -> dict:
            """Score the partition with the champion; the output names the version per row."""
            from maestro.serving.batch import score_partition

            context = get_current_context()
            params = context["params"]
            with fail_fast():
                return score_partition(
                    get_settings(), model, params["day"] or context["ds"], params["source"] or None
                )

        score()

    return batch_score()


for _spec in loadable_specs(get_settings()):
    globals()[f"batch_score_{_spec.name}"] = build_batch_dag(_spec)

"""
### Roll back `{model}`

Swaps `champion` and `previous` in the registry; the `{model}_champion` asset event it emits
deploys the previous version again (`deploy_{model}`).
"""

from __future__ import annotations

from airflow.sdk import Param, dag, get_current_context, task

from maestro.config import get_settings
from maestro.errors import fail_fast
from maestro.orchestration.assets import champion_asset
from maestro.orchestration.defaults import START_DATE, default_args
from maestro.spec import ModelSpec, loadable_specs


def build_rollback_dag(spec: ModelSpec):
    """The rollback DAG of one model."""
    model = spec.name
    champion = champion_asset(model)

    @dag(
        dag_id=f"rollback_{model}",
        doc_md=__doc__.format(model=model),
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(spec.owner, retries=1),
        tags=["maestro", "deployment", model],
        params={"comment": Param("rolled back from Airflow", type="string")},
    )
    def rollback():
        @task(outlets=[champion])
        def swap_champion(outlet_events=None) -> dict:
            """champion <-> previous; the asset event redeploys the version that served before."""
            from maestro import registry

            context = get_current_context()
            by = context["dag_run"].triggering_user_name or "airflow"
            with fail_fast():
                done = registry.rollback(get_settings(), model, by, context["params"]["comment"])
            outlet_events[champion].extra = done
            return done

        swap_champion()

    return rollback()


for _spec in loadable_specs(get_settings()):
    globals()[f"rollback_{_spec.name}"] = build_rollback_dag(_spec)

"""
### Serving `{model}`

- **deploy_{model}** runs when `{model}` gets a new champion (the `{model}_champion` asset: a
  promotion, a rollback, `maestro promote`) or by hand with `version`, `strategy` (rolling,
  blue-green, canary) and `target` (local: a model server process on this machine;
  kubernetes: a deployer pod in the cluster applies the Deployment, Service, HPA and serving
  plan, then moves traffic). Every step is smoke-tested; a failed step restores the version
  that served before and fails the run.
- **rollback_{model}** swaps `champion` and `previous` in the registry; the asset event it
  emits deploys the previous version again.
- **batch_score_{model}** scores one day of the source (or a file) with the champion and writes
  the predictions with the model version on every row.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from airflow.sdk import Asset, Param, dag, get_current_context, task
from maestro.airflow_api import champion_asset
from maestro.config import get_settings
from maestro.errors import fail_fast
from maestro.serving.deployer_pod import DeployerPodOperator
from maestro.spec import ModelSpec, loadable_specs

log = logging.getLogger(__name__)

DEFAULT_ARGS = {
    "owner": "maestro",
    "retries": 1,  # infrastructure hiccups; a failed rollout fails at once (fail_fast)
    "retry_delay": timedelta(seconds=20),
    "retry_exponential_backoff": 2.0,
}
STRATEGIES = ["rolling", "blue-green", "canary"]


def build_serving_dags(spec: ModelSpec) -> dict:
    model = spec.name
    asset_name, asset_uri = champion_asset(model)
    champion = Asset(name=asset_name, uri=asset_uri)
    doc = __doc__.format(model=model)
    common = {
        "start_date": datetime(2025, 1, 1),
        "catchup": False,
        "default_args": {**DEFAULT_ARGS, "owner": spec.owner},
        "doc_md": doc,
    }

    @dag(
        dag_id=f"deploy_{model}",
        schedule=[champion],
        max_active_runs=1,
        dagrun_timeout=timedelta(hours=1),
        tags=["maestro", "deployment", model],
        params={
            "version": Param("", type="string", description="Version; empty: the champion"),
            "strategy": Param("canary", enum=STRATEGIES),
            "target": Param("local", enum=["local", "kubernetes"]),
        },
        **common,
    )
    def deployment():
        @task
        def choose_version() -> dict:
            """The version to deploy: the param, else the promotion event's, else the champion."""
            context = get_current_context()
            params = context["params"]
            version = params["version"]
            events = context.get("triggering_asset_events") or {}
            for asset_events in events.values():
                for event in asset_events:
                    version = version or str(event.extra.get("champion", ""))
            return {"version": version, "strategy": params["strategy"], "target": params["target"]}

        @task.branch
        def choose_target(choice: dict) -> str:
            return f"deploy_{choice['target']}"

        @task
        def deploy_local(choice: dict) -> dict:
            """Roll out on the local model server, through its serving plan."""
            from maestro.serving.deploy import run_deployment

            with fail_fast():
                return run_deployment(
                    get_settings(), model, choice["version"], choice["strategy"], "local", log.info
                )

        choice = choose_version()
        settings = get_settings()
        pulled = "ti.xcom_pull(task_ids='choose_version')"
        deploy_kubernetes = DeployerPodOperator(
            task_id="deploy_kubernetes",
            model=model,
            version=f"{{{{ {pulled}['version'] }}}}",
            strategy=f"{{{{ {pulled}['strategy'] }}}}",
            namespace=settings.k8s_namespace,
            image=settings.serving_image,
        )
        choose_target(choice) >> [deploy_local(choice), deploy_kubernetes]

    @dag(
        dag_id=f"rollback_{model}",
        schedule=None,
        max_active_runs=1,
        tags=["maestro", "deployment", model],
        params={"comment": Param("rolled back from Airflow", type="string")},
        **common,
    )
    def rollback():
        @task(outlets=[champion])
        def swap_champion(outlet_events=None) -> dict:
            """champion <-> previous; the asset event redeploys the version that served before."""
            from maestro import governance

            context = get_current_context()
            by = context["dag_run"].triggering_user_name or "airflow"
            with fail_fast():
                done = governance.rollback(get_settings(), model, by, context["params"]["comment"])
            outlet_events[champion].extra = done
            return done

        swap_champion()

    @dag(
        dag_id=f"batch_score_{model}",
        schedule="@daily" if spec.schedule else None,
        max_active_runs=1,
        tags=["maestro", "batch", model],
        params={
            "day": Param("", type="string", description="YYYY-MM-DD; empty: the run's day"),
            "source": Param(
                "", type="string", description="A parquet/CSV file; empty: the spec's source"
            ),
        },
        **common,
    )
    def batch_score():
        @task
        def score() -> dict:
            """Score the partition with the champion; the output names the version per row."""
            from maestro.serving.batch import score_partition

            context = get_current_context()
            day = context["params"]["day"] or context["ds"]
            with fail_fast():
                return score_partition(
                    get_settings(), model, day, context["params"]["source"] or None
                )

        score()

    return {
        f"deploy_{model}": deployment(),
        f"rollback_{model}": rollback(),
        f"batch_score_{model}": batch_score(),
    }


for _spec in loadable_specs(get_settings()):
    globals().update(build_serving_dags(_spec))

"""
### Deploy `{model}`

Runs when `{model}` gets a new champion (the `{model}_champion` asset: a promotion, a rollback,
`maestro promote`) or by hand with `version`, `strategy` (rolling, blue-green, canary) and
`target` (local: a model server process on this machine; kubernetes: a deployer pod applies the
Deployment, Service, HPA and serving plan in the cluster, then moves traffic). Every step is
smoke-tested; a failed step restores the version that served before and fails the run.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from airflow.sdk import Param, dag, get_current_context, task

from maestro import lineage
from maestro.config import get_settings
from maestro.errors import fail_fast
from maestro.orchestration.assets import champion_asset
from maestro.orchestration.defaults import START_DATE, default_args
from maestro.orchestration.deployer_pod import DeployerPodOperator
from maestro.orchestration.lineage import record
from maestro.spec import ModelSpec, loadable_specs
from maestro.vocabulary import STRATEGIES, TARGETS

log = logging.getLogger(__name__)


def build_deployment_dag(spec: ModelSpec):
    """The deployment DAG of one model."""
    model = spec.name

    @dag(
        dag_id=f"deploy_{model}",
        doc_md=__doc__.format(model=model),
        schedule=[champion_asset(model)],
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        dagrun_timeout=timedelta(hours=1),
        # a failed rollout fails at once (fail_fast); one retry for infrastructure hiccups
        default_args=default_args(spec.owner, retries=1),
        tags=["maestro", "deployment", model],
        params={
            "version": Param("", type="string", description="Version; empty: the champion"),
            "strategy": Param("canary", enum=list(STRATEGIES)),
            "target": Param("local", enum=list(TARGETS)),
        },
    )
    def deployment():
        @task
        def choose_version() -> dict:
            """The version to deploy: the param, else the promotion event's, else the champion."""
            from maestro.deploy.rollout import requested_deployment
            from maestro.orchestration.assets import event_extras

            context = get_current_context()
            events = event_extras(context.get("triggering_asset_events"))
            return requested_deployment(context["params"], events)

        @task.branch
        def choose_target(choice: dict) -> str:
            """The local server or the Kubernetes deployer pod."""
            return f"deploy_{choice['target']}"

        @task
        def deploy_local(choice: dict) -> dict:
            """Roll out on the local model server, through its serving plan."""
            from maestro.deploy.rollout import run_deployment

            settings = get_settings()
            with fail_fast():
                done = run_deployment(
                    settings, model, choice["version"], choice["strategy"], "local", log.info
                )
            record(lineage.deployed(settings, model, done))
            return done

        choice = choose_version()
        pulled = "ti.xcom_pull(task_ids='choose_version')"
        deploy_kubernetes = DeployerPodOperator(
            task_id="deploy_kubernetes",
            model=model,
            version=f"{{{{ {pulled}['version'] }}}}",
            strategy=f"{{{{ {pulled}['strategy'] }}}}",
        )
        choose_target(choice) >> [deploy_local(choice), deploy_kubernetes]

    return deployment()


for _spec in loadable_specs(get_settings()):
    globals()[f"deploy_{_spec.name}"] = build_deployment_dag(_spec)

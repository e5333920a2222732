"""The training DAG's parts that are not wiring: a task per stage function, the schedule, the
run's params, why a run runs, and the approval request, built from the spec."""

from __future__ import annotations

import importlib
import logging
from datetime import timedelta
from typing import Any

from airflow.sdk import Param, task

from maestro import lineage
from maestro.config import get_settings
from maestro.errors import fail_fast
from maestro.orchestration.approval import ModelApprovalOperator
from maestro.orchestration.assets import drift_asset, event_extras
from maestro.orchestration.lineage import record
from maestro.spec import ModelSpec
from maestro.vocabulary import TRIGGERS


def stage(package: str, name: str, doc: str) -> Any:
    """A task running `maestro.<package>.stages.<name>(handle, settings)`: one typed handle in,
    one out, and what it read and wrote to the lineage; bad input fails it at once, without
    retries."""

    def run(handle: Any) -> Any:
        stages = importlib.import_module(f"maestro.{package}.stages")
        settings = get_settings()
        with fail_fast():
            result = getattr(stages, name)(handle, settings)
        record(lineage.training_stage(name, handle, result, settings))
        return result

    run.__doc__ = doc
    return task(python_callable=run, task_id=name)


def training_schedule(spec: ModelSpec) -> Any:
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


def training_params(spec: ModelSpec) -> dict[str, Param]:
    """What a run may be given: its trial budget and workers, why it runs, a drift verdict."""
    return {
        "trials": Param(spec.trials, type="integer", minimum=1, description="Trial budget"),
        "workers": Param(
            spec.workers or get_settings().tune_workers,
            type="integer",
            minimum=1,
            maximum=16,
            description="Parallel trial workers",
        ),
        "trigger": Param(
            "manual",
            enum=[t for t in TRIGGERS if t != "schedule"],
            description="Why (manual runs)",
        ),
        "drift_event": Param(
            None, type=["null", "object"], description="A drift run's verdict (drift runs)"
        ),
    }


def approval_request(spec: ModelSpec, verdict_task: str) -> ModelApprovalOperator:
    """The human decision on the version the verdict task judged (Required Actions)."""
    pulled = f"ti.xcom_pull(task_ids='{verdict_task}')"
    return ModelApprovalOperator(
        task_id="request_approval",
        subject=f"Promote {spec.name} version {{{{ {pulled}.version }}}} to champion?",
        body=f"{{{{ {pulled}.approval_request }}}}",
        model=spec.name,
        version=f"{{{{ {pulled}.version }}}}",
        approvers=spec.governance.approvers,
        response_timeout=timedelta(hours=spec.governance.approval_timeout_hours),
    )


def why_this_run(
    spec: ModelSpec, params: Any, dag_run: Any, triggering_asset_events: Any, ti: Any
) -> dict | bool:
    """The run's trigger (schedule, drift, manual or ci) as a dict for the next task, or False
    when there is nothing to train (a drift inside the cooldown), said in the task's log and
    in its XCom `not_trained`."""
    from maestro.training import stages

    events = event_extras(triggering_asset_events)
    events += [params["drift_event"]] if params.get("drift_event") else []
    run_type = getattr(dag_run.run_type, "value", str(dag_run.run_type))
    with fail_fast():
        why = stages.why_train(spec.name, get_settings(), run_type, params["trigger"], events)
    if isinstance(why, str):
        logging.getLogger("airflow.task").info(why)
        ti.xcom_push(key="not_trained", value=why)
        return False
    return why.model_dump()

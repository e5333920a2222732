"""
### Monitor `{model}`

Judges the serving champion on the last `monitoring.window_hours` of the prediction log:
**judge** compares the window with the champion's training set (Evidently's data drift tests on
every feature, the predictions' distribution) and, once labels have arrived through feedback,
the model's quality against the spec's limits. The verdict goes to an MLflow monitoring run
(Evidently's HTML report and the figures), the version's tags, the Evidently workspace and the
Pushgateway. A drift or quality verdict **signal_drift**s: the asset `{model}_drift` gets an
event with the figures (`train_{model}` listens) and the spec's recipients are told.
**watch_pipeline** counts versions waiting for a decision and reminds once about any waiting
longer than the spec allows. Too few rows: nothing is judged, nothing is signalled.
"""

from __future__ import annotations

from airflow.sdk import Param, dag, task

from maestro import lineage
from maestro.config import get_settings
from maestro.errors import fail_fast
from maestro.handles import MonitorVerdict
from maestro.orchestration.assets import drift_asset
from maestro.orchestration.defaults import START_DATE, default_args
from maestro.orchestration.lineage import record
from maestro.orchestration.notify import outcome_callbacks
from maestro.spec import ModelSpec, loadable_specs


def build_monitoring_dag(spec: ModelSpec):
    """The monitoring DAG of one model spec."""
    model = spec.name
    drift = drift_asset(model)

    @dag(
        dag_id=f"monitor_{model}",
        doc_md=__doc__.format(model=model),
        schedule=spec.monitoring.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=default_args(spec.owner, retries=1),
        tags=["maestro", "monitoring", model],
        params={
            "window_end": Param(
                "", type="string", description="ISO time the window ends; empty: now"
            ),
        },
        **outcome_callbacks(model),
    )
    def monitoring():
        @task
        def judge(params=None) -> MonitorVerdict:
            """Drift and quality of the champion on the window; record the verdict."""
            from datetime import datetime

            from maestro.monitoring import stages

            end = datetime.fromisoformat(params["window_end"]) if params["window_end"] else None
            settings = get_settings()
            with fail_fast():
                verdict = stages.judge(model, settings, end)
            record(lineage.monitored(settings, verdict))
            return verdict

        @task.short_circuit
        def drifted(verdict: MonitorVerdict) -> bool:
            """Go on only for a drift or quality verdict."""
            return verdict.found_something

        @task(outlets=[drift])
        def signal_drift(verdict: MonitorVerdict, outlet_events=None) -> dict:
            """Post the `{model}_drift` event (train listens) and tell the recipients."""
            from maestro.monitoring import alerts

            outlet_events[drift].extra = verdict.event
            alerts.send(
                spec.monitoring.notify,
                {**verdict.event, "event": "drift", "message": verdict.reason},
            )
            return verdict.event

        @task
        def watch_pipeline() -> dict:
            """Pending approvals and the champion's age, to Prometheus; remind once."""
            from maestro.monitoring import approvals

            with fail_fast():
                return approvals.watch_pipeline(model, get_settings())

        verdict = judge()
        drifted(verdict) >> signal_drift(verdict)
        watch_pipeline()

    return monitoring()


for _spec in loadable_specs(get_settings()):
    if _spec.monitoring.enabled:
        globals()[f"monitor_{_spec.name}"] = build_monitoring_dag(_spec)

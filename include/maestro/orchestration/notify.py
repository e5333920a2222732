"""Airflow notifiers: a DAG run's outcome to the spec's recipients and to Prometheus."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from airflow.sdk import BaseNotifier


class RunOutcomeNotifier(BaseNotifier):
    """On a failed run: tell the spec's `monitoring.notify` recipients. On any outcome: push
    when the DAG last ended in that state (the `TrainingFailed` and `MonitoringNotRun` alerts
    read it)."""

    template_fields = ("model", "state")

    def __init__(self, *, model: str, state: str) -> None:
        super().__init__()
        self.model = model
        self.state = state

    def notify(self, context: Any) -> None:
        from maestro.config import get_settings
        from maestro.monitoring import alerts, metrics
        from maestro.spec import get_spec

        settings = get_settings()
        dag_run = context["dag_run"]
        now = datetime.now(UTC)
        metrics.push(
            settings,
            "maestro_dag_runs",
            self.model,
            [
                (
                    "maestro_dag_run_end_timestamp_seconds",
                    "When a Maestro DAG run last ended in this state",
                    {"dag_id": dag_run.dag_id, "state": self.state},
                    now.timestamp(),
                )
            ],
            group={"dag_id": dag_run.dag_id, "state": self.state},
        )
        if self.state == "failed":
            from maestro import tracking

            tracking.fail_open_runs(settings, self.model, dag_run.dag_id, dag_run.run_id)
            alerts.send(
                get_spec(self.model, settings).monitoring.notify,
                {
                    "event": "run_failed",
                    "model": self.model,
                    "dag_id": dag_run.dag_id,
                    "run_id": dag_run.run_id,
                    "message": f"{dag_run.dag_id} run {dag_run.run_id} failed at "
                    f"{now.isoformat(timespec='seconds')}",
                },
            )


def outcome_callbacks(model: str) -> dict:
    """The DAG arguments that report each run's outcome."""
    return {
        "on_failure_callback": RunOutcomeNotifier(model=model, state="failed"),
        "on_success_callback": RunOutcomeNotifier(model=model, state="success"),
    }

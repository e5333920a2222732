"""What the training DAG's tasks hand each other: small, typed references (run ids, paths,
names), never data. One definition each; a field that is misspelt, missing or of the wrong type
fails in the task that writes it. Airflow carries them through XCom as pydantic models
(`allowed_deserialization_classes` in airflow.cfg admits `maestro.*`)."""

from __future__ import annotations

from typing import Any, Self

from pydantic import BaseModel, ConfigDict

from maestro.vocabulary import INSUFFICIENT_DATA, OK


class Handle(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def updated(self, **fields: Any) -> Self:
        """A copy with `fields` set, validated like a new one (unknown names are refused)."""
        return type(self).model_validate({**self.model_dump(), **fields})


class FeatureSet(Handle):
    feature_service: str
    feature_views: list[str]
    materialized_start: str
    materialized_end: str


class BestTrial(Handle):
    number: int
    family: str
    params: dict[str, float | int | str | bool | None]
    value: float
    trials: int  # trials the study had when it was read


class TrainingTrigger(Handle):
    """Why a training run runs: `trigger` is one of `vocabulary.TRIGGERS`; a drift-triggered
    run names the monitoring run whose verdict started it."""

    trigger: str
    reason: str = ""
    drift_report_run_id: str | None = None


class TrainingRun(Handle):
    """One training run from ingest to `train_final`, filled in stage by stage."""

    model: str
    dag_id: str
    airflow_run_id: str
    trigger: TrainingTrigger = TrainingTrigger(trigger="manual")
    pipeline_run_id: str  # the MLflow run that records the Airflow run
    data: dict[str, str | int]  # the data version: hash, rows, start, end, source, path
    validation: str | None = None
    features: FeatureSet | None = None
    training_set: str | None = None  # folder of the train/valid/test parquet files
    splits: dict[str, int] | None = None
    study: str | None = None
    tune_run_id: str | None = None
    budget: int | None = None
    workers: int | None = None
    best: BestTrial | None = None
    model_run_id: str | None = None
    logged_model_uri: str | None = None
    test_metrics: dict[str, float] | None = None


class CandidateVersion(Handle):
    """A registered version (`challenger`) through evaluation, the gates and the decision."""

    model: str
    version: str
    alias: str
    model_uri: str
    test_metrics: dict[str, float]
    pipeline_run_id: str
    training_set: str
    evaluation_run_id: str | None = None
    validation_status: str | None = None
    failed_checks: list[str] = []
    approval_request: str | None = None


class MonitorVerdict(Handle):
    """One monitoring run's judgement of the serving champion on a window of production data."""

    model: str
    version: str
    window_start: str
    window_end: str
    rows: int
    status: str  # insufficient_data | ok | drift | performance | drift+performance
    reason: str
    drift_share: float | None = None
    drifted_columns: list[str] = []
    prediction_drift: float | None = None
    labels: int = 0
    performance: dict[str, float] = {}
    breached: list[str] = []
    run_id: str | None = None  # the MLflow monitoring run (report, figures)
    retrain: bool = False

    @property
    def found_something(self) -> bool:
        """Drift or a breached metric: what starts retraining and tells the recipients."""
        return self.status not in (OK, INSUFFICIENT_DATA)

    @property
    def event(self) -> dict:
        """What the `<model>_drift` asset event carries."""
        return {
            "model": self.model,
            "version": self.version,
            "status": self.status,
            "drift_share": self.drift_share,
            "drifted_columns": self.drifted_columns,
            "breached": self.breached,
            "performance": self.performance,
            "report_run_id": self.run_id,
            "window_end": self.window_end,
        }

"""Where a monitoring verdict is recorded, for people to look: an MLflow monitoring run
(Evidently's HTML reports, the figures as JSON), tags on the model version, the Evidently
workspace and the Pushgateway."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from typing import NamedTuple

import pandas as pd

from maestro import tracking
from maestro.config import Settings
from maestro.handles import MonitorVerdict
from maestro.monitoring import metrics
from maestro.monitoring.drift import ColumnDrift, DriftResult
from maestro.spec import ModelSpec
from maestro.vocabulary import INSUFFICIENT_DATA

log = logging.getLogger(__name__)


class Judged(NamedTuple):
    """What a judged window was judged on, for its reports and figures."""

    features: DriftResult  # the features' drift, column by column
    predictions: ColumnDrift  # the predictions' drift
    reference: pd.DataFrame  # the champion's training rows it scored
    current: pd.DataFrame  # the window's logged rows
    labelled: pd.DataFrame  # those of them with a label


def record_verdict(
    spec: ModelSpec, settings: Settings, verdict: MonitorVerdict, judged: Judged | None
) -> str:
    """The MLflow monitoring run (with the reports), the version's tags, the Evidently
    workspace, the Pushgateway. Returns the MLflow run id."""
    mlc = tracking.client(settings)
    run = mlc.create_run(
        tracking.experiment_id(settings, spec.name),
        run_name=f"monitor {spec.name} v{verdict.version} {verdict.window_end[:16]}",
        tags={
            "maestro.stage": "monitoring",
            "model_name": spec.name,
            "model_version": verdict.version,
            "monitoring_status": verdict.status,
        },
    )
    run_id = run.info.run_id
    figures = {"rows": verdict.rows, "labels": verdict.labels}
    summary = verdict.model_dump()
    if judged is not None:
        found, predictions = judged.features, judged.predictions
        figures |= {"drift_share": found.share, "prediction_drift": predictions.score}
        figures |= {f"drift.{c.column}": c.score for c in found.columns}
        figures |= {f"production_{k}": v for k, v in verdict.performance.items()}
        summary |= {"columns": found.to_dict()["columns"], "prediction": predictions.__dict__}
        _log_reports(spec, settings, run_id, judged)
    for key, value in figures.items():
        mlc.log_metric(run_id, key, float(value))
    mlc.log_dict(run_id, summary, "monitoring/verdict.json")
    mlc.set_terminated(run_id)
    for key, value in {
        "monitoring_status": verdict.status,
        "monitoring_run_id": run_id,
        "monitoring_at": verdict.window_end,
        "monitoring_drift_share": ""
        if verdict.drift_share is None
        else f"{verdict.drift_share:.3f}",
        "monitoring_drifted_columns": ",".join(verdict.drifted_columns),
    }.items():
        mlc.set_model_version_tag(spec.name, verdict.version, key, value)
    metrics.push(settings, "maestro_monitor", spec.name, _samples(spec, verdict, judged))
    log.info("%s version %s: %s (%s)", spec.name, verdict.version, verdict.status, verdict.reason)
    return run_id


def _log_reports(spec: ModelSpec, settings: Settings, run_id: str, judged: Judged) -> None:
    from maestro.monitoring import report

    snapshots = [report.drift_report(spec, judged.reference, judged.current)]
    if len(judged.labelled) >= spec.monitoring.min_labels:
        snapshots.append(report.quality_report(spec, judged.reference, judged.labelled))
    mlc = tracking.client(settings)
    with tempfile.TemporaryDirectory(prefix="maestro-monitor-") as tmp:
        for snapshot, name in zip(snapshots, ("drift", "quality"), strict=False):
            snapshot.save_html(f"{tmp}/{name}.html")
            snapshot.save_json(f"{tmp}/{name}.json")
        mlc.log_artifacts(run_id, tmp, "monitoring")
    project = report.add_to_workspace(settings.evidently_dir, spec.name, snapshots)
    mlc.set_tag(run_id, "evidently_project", project)


def _samples(
    spec: ModelSpec, verdict: MonitorVerdict, judged: Judged | None
) -> list[metrics.Sample]:
    samples: list[metrics.Sample] = [
        (
            "maestro_monitor_expected_interval_seconds",
            "How often the monitoring job should run (its window)",
            {},
            spec.monitoring.window_hours * 3600,
        ),
        (
            "maestro_monitor_last_run_timestamp_seconds",
            "When the monitoring job last ran",
            {},
            dt.datetime.now(dt.UTC).timestamp(),
        ),
        ("maestro_monitor_rows", "Logged rows in the judged window", {}, verdict.rows),
        ("maestro_monitor_labels", "Labelled rows in the judged window", {}, verdict.labels),
        (
            "maestro_monitor_judged",
            "1 if the window had enough rows to judge",
            {},
            0 if verdict.status == INSUFFICIENT_DATA else 1,
        ),
    ]
    if judged is None:
        return samples
    found, predictions = judged.features, judged.predictions
    samples += [
        ("maestro_drift_share", "Share of feature columns drifted", {}, found.share),
        (
            "maestro_dataset_drift",
            "1 when the drifted share reaches the spec's limit",
            {},
            int(found.dataset_drift),
        ),
        (
            "maestro_prediction_drift_score",
            "Drift score of the predictions' distribution",
            {},
            predictions.score,
        ),
        (
            "maestro_prediction_drifted",
            "1 when the predictions' distribution drifted",
            {},
            int(predictions.drifted),
        ),
        (
            "maestro_performance_breached",
            "1 when a production metric is beyond its limit",
            {},
            int(bool(verdict.breached)),
        ),
    ]
    samples += [
        (
            "maestro_feature_drift_score",
            "Drift score per feature (distance or p-value)",
            {"feature": c.column, "method": c.method},
            c.score,
        )
        for c in found.columns
    ]
    samples += [
        (
            "maestro_feature_drifted",
            "1 for a drifted feature",
            {"feature": c.column},
            int(c.drifted),
        )
        for c in found.columns
    ]
    samples += [
        ("maestro_production_metric", "Model quality on labelled production rows", {"metric": k}, v)
        for k, v in verdict.performance.items()
    ]
    return samples

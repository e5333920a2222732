"""The monitoring job's stages, one function per task of `monitor_<model>`.

`judge` reads a window of the prediction log for the serving champion, compares it with the
champion's own training set (data drift, and the predictions' distribution), joins whatever
ground truth has arrived (model quality), and records the verdict where people look: an MLflow
monitoring run (Evidently's HTML report, the figures as JSON), tags on the model version, the
Evidently workspace and Prometheus. `watch_pipeline` looks after what waits on people.
"""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from maestro import tracking
from maestro.config import Settings
from maestro.errors import BadInput
from maestro.governance import registry
from maestro.handles import MonitorVerdict
from maestro.monitoring import drift, feedback, metrics
from maestro.monitoring.report import PREDICTION, TARGET
from maestro.serving import predlog
from maestro.spec import ModelSpec, get_spec
from maestro.vocabulary import APPROVAL_TAGS, PASSED, VALIDATION_STATUS_TAG

log = logging.getLogger(__name__)

REFERENCE_SCORED_ROWS = 50_000  # reference rows the champion scores for the prediction drift
INSUFFICIENT, OK = "insufficient_data", "ok"


class MonitorError(BadInput):
    """A monitoring run that cannot judge: no champion, no log, no reference."""


def _champion(spec: ModelSpec, settings: Settings) -> Any:
    version = registry.champion_version(settings, spec.name)
    if version is None:
        raise MonitorError(f"{spec.name}: no champion to monitor; promote a version first")
    return version


def current_window(
    spec: ModelSpec, settings: Settings, end: dt.datetime
) -> tuple[dt.datetime, pd.DataFrame]:
    """The window's primary predictions, features under their own names."""
    location = settings.prediction_log_location
    if not predlog.has_log(location, spec.name):
        raise MonitorError(
            f"{spec.name}: no prediction log at {predlog.redacted(location)}; "
            "serve the model (maestro serve) before monitoring it"
        )
    start = end - dt.timedelta(hours=spec.monitoring.window_hours)
    frame = predlog.read_log(location, spec.name, start, end, role="primary")
    frame = frame.rename(columns=lambda c: c.removeprefix("feature."))
    for name in spec.feature_names:  # a feature never sent in the window: all missing
        if name not in frame.columns:
            frame[name] = np.nan
    return start, frame


def reference_set(spec: ModelSpec, settings: Settings, version: Any) -> pd.DataFrame:
    """The rows the champion learnt from (train + validation of its training set), found
    through its lineage; or the spec's own reference file."""
    if spec.monitoring.reference != "champion":
        path = Path(spec.monitoring.reference)
        path = path if path.is_absolute() else settings.project_dir / path
        if not path.exists():
            raise MonitorError(f"{spec.name}: monitoring.reference {path} does not exist")
        return pd.read_parquet(path)
    data_version = version.tags.get("data_version")
    folder = settings.home / "training_sets" / spec.name / str(data_version)
    if not (folder / "train.parquet").exists() and version.tags.get("pipeline_run_id"):
        try:
            tracking.client(settings).download_artifacts(
                version.tags["pipeline_run_id"], "training_set", str(folder.parent)
            )
            (folder.parent / "training_set").rename(folder)
        except Exception as error:  # noqa: BLE001 - MLflow raises its own types
            log.warning(
                "training set of %s v%s not in MLflow: %s", spec.name, version.version, error
            )
    parts = [folder / f"{name}.parquet" for name in ("train", "valid")]
    if not all(p.exists() for p in parts):
        raise MonitorError(
            f"{spec.name}: reference missing: version {version.version}'s training set "
            f"(data_version {data_version}) is neither at {folder} nor in its MLflow run"
        )
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def champion_scores(
    spec: ModelSpec, settings: Settings, version: Any, rows: pd.DataFrame
) -> np.ndarray:
    import mlflow

    from maestro.training.families import scores

    tracking.client(settings)
    model = mlflow.sklearn.load_model(f"models:/{spec.name}/{version.version}")
    return scores(model, spec, rows[spec.feature_names])


def labelled_rows(current: pd.DataFrame, labels: pd.DataFrame) -> pd.DataFrame:
    """The window's predictions that have a label, however late it came (`row` is the record's
    place in its request)."""
    online = labels.dropna(subset=["request_id"])
    if current.empty or online.empty:
        return current.iloc[:0].assign(**{TARGET: pd.Series(dtype="float64")})
    keyed = current.assign(row=current.groupby("request_id").cumcount())
    joined = keyed.merge(
        online[["request_id", "row", "label"]].astype({"request_id": "object"}),
        on=["request_id", "row"],
    )
    return joined.rename(columns={"label": TARGET})


def batch_labelled(
    settings: Settings, spec: ModelSpec, labels: pd.DataFrame, start: dt.datetime, end: dt.datetime
) -> pd.DataFrame:
    """Batch scores made in the window that have a label (keyed by entity and event time)."""
    from maestro.serving.batch import read_scores

    keyed = labels.dropna(subset=["entity"])
    scores = read_scores(settings, spec.name) if not keyed.empty else pd.DataFrame()
    if scores.empty:
        return pd.DataFrame(columns=[PREDICTION, TARGET])
    scored_at = pd.to_datetime(scores["scored_at"], utc=True)
    scores = scores[(scored_at >= start) & (scored_at < end)]
    key, ts = spec.entity.key, spec.timestamp.column
    scores = scores.assign(
        entity=scores[key].astype(str), event_timestamp=pd.to_datetime(scores[ts], utc=True)
    )
    keyed = keyed.assign(event_timestamp=pd.to_datetime(keyed["event_timestamp"], utc=True))
    joined = scores.merge(
        keyed[["entity", "event_timestamp", "label"]], on=["entity", "event_timestamp"]
    )
    return joined.rename(columns={"label": TARGET})[[PREDICTION, TARGET]]


def _breaches(spec: ModelSpec, performance: dict[str, float]) -> list[str]:
    out = []
    for metric, bound in spec.monitoring.performance.items():
        value = performance.get(metric)
        if value is None:
            continue
        if bound.max is not None and value > bound.max:
            out.append(f"{metric} {value:.4g} above its limit {bound.max:g}")
        if bound.min is not None and value < bound.min:
            out.append(f"{metric} {value:.4g} below its limit {bound.min:g}")
    return out


def judge(model: str, settings: Settings, end: dt.datetime | None = None) -> MonitorVerdict:
    """Judge the window ending at `end` (default: now); record the verdict everywhere."""
    spec = get_spec(model, settings)
    version = _champion(spec, settings)
    end = end or dt.datetime.now(dt.UTC)
    start, current = current_window(spec, settings, end)
    base = {
        "model": model,
        "version": str(version.version),
        "window_start": start.isoformat(),
        "window_end": end.isoformat(),
        "rows": len(current),
    }
    if len(current) < spec.monitoring.min_rows:
        verdict = MonitorVerdict(
            **base,
            status=INSUFFICIENT,
            reason=f"{len(current)} logged rows in the window, fewer than the "
            f"{spec.monitoring.min_rows} needed to judge: nothing judged",
        )
        _record(spec, settings, verdict, None)
        return verdict
    reference = reference_set(spec, settings, version)
    numeric = [f.name for f in spec.features if f.type != "category"]
    found = drift.dataset_drift(
        reference, current, numeric, spec.categorical_features, spec.monitoring.drift
    )
    scored = reference.sample(min(len(reference), REFERENCE_SCORED_ROWS), random_state=0)
    scored = scored.assign(**{PREDICTION: champion_scores(spec, settings, version, scored)})
    if TARGET not in scored.columns:
        scored[TARGET] = scored[spec.target.name].astype("float64")
    predictions = drift.column_drift(PREDICTION, scored[PREDICTION], current[PREDICTION], "numeric")
    labels = feedback.read(settings, model)
    labelled = labelled_rows(current, labels)
    truth = pd.concat(
        [labelled[[PREDICTION, TARGET]], batch_labelled(settings, spec, labels, start, end)],
        ignore_index=True,
    )
    performance: dict[str, float] = {}
    if len(truth) >= spec.monitoring.min_labels:
        from maestro.training.families import evaluate

        try:
            performance = evaluate(
                spec,
                truth[TARGET].to_numpy(dtype="float64"),
                truth[PREDICTION].to_numpy(dtype="float64"),
            )
        except ValueError as error:  # one class only among the labels
            log.warning("%s: model quality not judged: %s", model, error)
    breached = _breaches(spec, performance)
    flags = (["drift"] if found.dataset_drift else []) + (["performance"] if breached else [])
    status = "+".join(flags) or OK
    reason = "; ".join(
        (
            [
                f"dataset drift: {len(found.drifted_columns)} of {len(found.columns)} columns "
                f"({found.share:.0%}, limit {spec.monitoring.drift.share:.0%}): "
                f"{', '.join(found.drifted_columns)}"
            ]
            if found.dataset_drift
            else []
        )
        + breached
    ) or (
        f"no dataset drift ({found.share:.0%} of columns drifted"
        + (f": {', '.join(found.drifted_columns)}" if found.drifted_columns else "")
        + ")"
    )
    verdict = MonitorVerdict(
        **base,
        status=status,
        reason=reason,
        drift_share=found.share,
        drifted_columns=found.drifted_columns,
        prediction_drift=predictions.score,
        labels=len(truth),
        performance=performance,
        breached=breached,
        retrain=bool(flags) and spec.monitoring.retrain,
    )
    run_id = _record(spec, settings, verdict, (found, predictions, scored, current, labelled))
    return verdict.updated(run_id=run_id)


def _record(
    spec: ModelSpec, settings: Settings, verdict: MonitorVerdict, judged: Any
) -> str | None:
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
        found, predictions, reference, current, labelled = judged
        figures |= {"drift_share": found.share, "prediction_drift": predictions.score}
        figures |= {f"drift.{c.column}": c.score for c in found.columns}
        figures |= {f"production_{k}": v for k, v in verdict.performance.items()}
        summary |= {"columns": found.to_dict()["columns"], "prediction": predictions.__dict__}
        _log_reports(spec, settings, run_id, reference, current, labelled)
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


def _log_reports(
    spec: Any, settings: Settings, run_id: Any, reference: Any, current: Any, labelled: Any
) -> None:
    from maestro.monitoring import report

    snapshots = [report.drift_report(spec, reference, current)]
    if len(labelled) >= spec.monitoring.min_labels:
        snapshots.append(report.quality_report(spec, reference, labelled))
    mlc = tracking.client(settings)
    with tempfile.TemporaryDirectory(prefix="maestro-monitor-") as tmp:
        for snapshot, name in zip(snapshots, ("drift", "quality"), strict=False):
            snapshot.save_html(f"{tmp}/{name}.html")
            snapshot.save_json(f"{tmp}/{name}.json")
        mlc.log_artifacts(run_id, tmp, "monitoring")
    project = report.add_to_workspace(settings.evidently_dir, spec.name, snapshots)
    mlc.set_tag(run_id, "evidently_project", project)


def _samples(spec: ModelSpec, verdict: MonitorVerdict, judged: Any) -> list[metrics.Sample]:
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
            0 if verdict.status == INSUFFICIENT else 1,
        ),
    ]
    if judged is None:
        return samples
    found, predictions = judged[0], judged[1]
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


def pending_approvals(settings: Settings, model: str) -> list:
    """Versions that passed every gate and still wait for a decision."""
    mlc = tracking.client(settings)
    versions = mlc.search_model_versions(f"name = '{model}'")
    return [
        v
        for v in versions
        if v.tags.get(VALIDATION_STATUS_TAG) == PASSED
        and APPROVAL_TAGS["decision"] not in v.tags
        and v.tags.get("archived") != "true"
    ]


def watch_pipeline(model: str, settings: Settings) -> dict:
    """Pending approvals and the champion's age, for Prometheus and the spec's recipients: a
    version waiting longer than `notify.approval_wait_hours` is reported once."""
    from maestro.monitoring import alerts

    spec = get_spec(model, settings)
    now = dt.datetime.now(dt.UTC).timestamp()
    waiting = pending_approvals(settings, model)
    ages = {str(v.version): now - v.creation_timestamp / 1000 for v in waiting}
    limit = spec.monitoring.notify.approval_wait_hours * 3600
    mlc = tracking.client(settings)
    reminded = []
    for v in waiting:
        if ages[str(v.version)] > limit and "approval_reminded_at" not in v.tags:
            alerts.send(
                spec.monitoring.notify,
                {
                    "event": "approval_waiting",
                    "model": model,
                    "version": str(v.version),
                    "waiting_hours": round(ages[str(v.version)] / 3600, 1),
                    "message": f"{model} version {v.version} has waited "
                    f"{ages[str(v.version)] / 3600:.1f} h for a decision "
                    f"(limit {spec.monitoring.notify.approval_wait_hours:g} h)",
                },
            )
            mlc.set_model_version_tag(model, v.version, "approval_reminded_at", registry.now())
            reminded.append(str(v.version))
    champion = registry.champion_version(settings, model)
    promoted = None
    if champion is not None:
        at = champion.tags.get("promoted_at")
        promoted = (
            dt.datetime.fromisoformat(at).timestamp() if at else champion.creation_timestamp / 1000
        )
    samples: list[metrics.Sample] = [
        (
            "maestro_pending_approvals",
            "Versions that passed their gates, waiting for a decision",
            {},
            len(waiting),
        ),
        (
            "maestro_pending_approval_age_seconds",
            "How long the oldest pending version has waited",
            {},
            max(ages.values(), default=0.0),
        ),
        ("maestro_approval_wait_limit_seconds", "How long a version may wait (spec)", {}, limit),
        (
            "maestro_champion_max_age_seconds",
            "How old the champion may grow (spec)",
            {},
            spec.monitoring.champion_max_age_days * 86400,
        ),
        (
            "maestro_pipeline_watch_timestamp_seconds",
            "When pending approvals were last counted",
            {},
            now,
        ),
    ]
    if promoted is not None:
        samples.append(
            (
                "maestro_champion_promoted_timestamp_seconds",
                "When the serving champion was promoted",
                {},
                promoted,
            )
        )
    metrics.push(settings, "maestro_pipeline", model, samples)
    return {"model": model, "pending": sorted(ages), "reminded": reminded}

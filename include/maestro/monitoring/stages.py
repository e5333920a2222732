"""The monitoring job's stages, one function per task of `monitor_<model>`.

`judge` reads a window of the prediction log for the serving champion, compares it with the
champion's own training set (data drift, and the predictions' distribution), joins whatever
ground truth has arrived (model quality), and records the verdict where people look
(`record`). What waits on people is `approvals.watch_pipeline`.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from maestro import registry, tracking
from maestro.config import Settings
from maestro.errors import BadInput
from maestro.handles import MonitorVerdict
from maestro.logs import predictions
from maestro.logs.labels import read_labels
from maestro.logs.scores import read_scores
from maestro.monitoring import drift
from maestro.monitoring.record import Judged, record_verdict
from maestro.monitoring.report import PREDICTION, TARGET
from maestro.spec import ModelSpec, get_spec
from maestro.vocabulary import INSUFFICIENT_DATA, OK, PRIMARY

log = logging.getLogger(__name__)

REFERENCE_SCORED_ROWS = 50_000  # reference rows the champion scores for the prediction drift


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
    """The window's primary predictions (time and prediction only: the features are read
    column by column, `WindowColumns`)."""
    location = settings.prediction_log_location
    if not predictions.has_log(location, spec.name):
        raise MonitorError(
            f"{spec.name}: no prediction log at {predictions.prediction_store(location).shown}; "
            "serve the model (maestro serve) before monitoring it"
        )
    start = end - dt.timedelta(hours=spec.monitoring.window_hours)
    meta = predictions.read_log(location, spec.name, start, end, role=PRIMARY, columns=[PREDICTION])
    return start, meta


def _named_features(frame: pd.DataFrame, spec: ModelSpec) -> pd.DataFrame:
    """Logged rows with the features under their own names (one never sent: all missing)."""
    frame = frame.rename(columns=lambda c: c.removeprefix("feature."))
    missing = {name: np.nan for name in spec.feature_names if name not in frame.columns}
    return frame.assign(**missing)


class WindowColumns:
    """The window's logged features, read one column at a time, so that a window of ten
    million rows by twenty features is never in memory whole (a column is 80 MB; the whole,
    as a DataFrame, several GB). Each column read leaves its values at a fixed random sample
    of rows behind, which make the rows of the Evidently report (`sample`)."""

    def __init__(
        self,
        spec: ModelSpec,
        settings: Settings,
        window: tuple[dt.datetime, dt.datetime],
        meta: pd.DataFrame,
    ) -> None:
        from maestro.monitoring.report import SAMPLE_ROWS

        self.spec, self.window, self.meta = spec, window, meta
        self.location = settings.prediction_log_location
        chosen = np.random.default_rng(0).choice(len(meta), min(len(meta), SAMPLE_ROWS), False)
        self.positions = np.sort(chosen)
        self.sampled: dict[str, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.meta)

    def __getitem__(self, name: str) -> pd.Series:
        column = f"feature.{name}"
        start, end = self.window
        read = predictions.read_log(
            self.location, self.spec.name, start, end, role=PRIMARY, columns=[column]
        )
        values = read[column] if column in read.columns else pd.Series(np.nan, index=read.index)
        # rows answered while the columns are read (their time inside the window) join the
        # later columns only: the sample takes the positions the first read had
        self.sampled[name] = values.to_numpy()[self.positions[self.positions < len(values)]]
        return values

    def sample(self) -> pd.DataFrame:
        """The sampled rows of every column read so far, with their predictions."""
        rows = self.meta.iloc[self.positions].reset_index(drop=True)
        columns = {n: pd.Series(v).reindex(range(len(rows))) for n, v in self.sampled.items()}
        return _named_features(rows.assign(**columns), self.spec)


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

    from maestro.models import load_version, scores

    tracking.use_tracking(settings)
    model = load_version(f"models:/{spec.name}/{version.version}")
    found = scores(model, spec, rows[spec.feature_names])
    # multiclass: the predicted class's code, as the prediction log keeps it
    return found.argmax(axis=1).astype("float64") if spec.multiclass else found


def labelled_rows(
    spec: ModelSpec,
    settings: Settings,
    window: tuple[dt.datetime, dt.datetime],
    labels: pd.DataFrame,
) -> pd.DataFrame:
    """The window's predictions that have a label, however late it came, with their features
    (only the labelled requests' rows are read; `row` is the record's place in its
    request)."""
    online = labels.dropna(subset=["request_id"])
    start, end = window
    ids = set(online["request_id"].astype(str))
    location = settings.prediction_log_location
    rows = pd.DataFrame()
    if ids:
        rows = predictions.read_log(location, spec.name, start, end, PRIMARY, request_ids=ids)
    if rows.empty:
        empty = pd.DataFrame(columns=[*spec.feature_names, PREDICTION])
        return empty.assign(**{TARGET: pd.Series(dtype="float64")})
    keyed = _named_features(rows, spec).assign(row=rows.groupby("request_id").cumcount())
    joined = keyed.merge(
        online[["request_id", "row", "label"]].astype({"request_id": "object"}),
        on=["request_id", "row"],
    )
    return joined.rename(columns={"label": TARGET})


def batch_labelled(
    settings: Settings, spec: ModelSpec, labels: pd.DataFrame, start: dt.datetime, end: dt.datetime
) -> pd.DataFrame:
    """Batch scores made in the window that have a label (keyed by entity and event time)."""
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
    if spec.multiclass:  # batch scores carry labels; the log and the labels, codes
        codes = {label: code for code, label in enumerate(spec.classes)}
        joined[PREDICTION] = joined[PREDICTION].astype(str).map(codes).astype("float64")
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
    start, meta = current_window(spec, settings, end)
    current = WindowColumns(spec, settings, (start, end), meta)
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
            status=INSUFFICIENT_DATA,
            reason=f"{len(current)} logged rows in the window, fewer than the "
            f"{spec.monitoring.min_rows} needed to judge: nothing judged",
        )
        record_verdict(spec, settings, verdict, None)
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
    kind = "categorical" if spec.multiclass else "numeric"  # multiclass: the predicted mix
    predictions = drift.column_drift(PREDICTION, scored[PREDICTION], meta[PREDICTION], kind)
    labels = read_labels(settings, model)
    labelled = labelled_rows(spec, settings, (start, end), labels)
    parts = [labelled[[PREDICTION, TARGET]], batch_labelled(settings, spec, labels, start, end)]
    # an empty part would decide the columns' types (pandas' FutureWarning): left out
    truth = pd.concat([p for p in parts if not p.empty] or parts[:1], ignore_index=True)
    performance: dict[str, float] = {}
    if len(truth) >= spec.monitoring.min_labels:
        from maestro.training.families import evaluate, label_metrics

        try:
            y, predicted = (truth[c].to_numpy(dtype="float64") for c in (TARGET, PREDICTION))
            performance = (
                label_metrics(y.astype(int), predicted.astype(int))
                if spec.multiclass
                else evaluate(spec, y, predicted)
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
    judged = Judged(found, predictions, scored, current.sample(), labelled)
    run_id = record_verdict(spec, settings, verdict, judged)
    return verdict.updated(run_id=run_id)

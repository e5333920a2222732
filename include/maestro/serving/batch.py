"""Batch scoring: one data partition (a day of the spec's source, or a file) scored by the
champion, written with the model version on every row."""

from __future__ import annotations

import pandas as pd

from maestro.config import Settings
from maestro.errors import BadInput
from maestro.logs.scores import write_scores


def read_partition(settings: Settings, model: str, day: str, source: str | None) -> pd.DataFrame:
    """The rows of `day` (UTC) from the spec's source, or every row of a parquet/CSV file."""
    from maestro.data import sources
    from maestro.spec import get_spec
    from maestro.spec.fields import normalise_name

    spec = get_spec(model, settings)
    if source:
        frame = pd.read_parquet(source) if source.endswith(".parquet") else pd.read_csv(source)
        frame.columns = [normalise_name(c) for c in frame.columns]
        return frame
    origin = f"{model} source"
    frame = sources.conform(
        sources.add_keys(sources.read_source(spec, settings), spec, origin), spec, origin
    )
    start = pd.Timestamp(day, tz="UTC")
    ts = frame[spec.timestamp.column]
    return frame[(ts >= start) & (ts < start + pd.Timedelta(days=1))].reset_index(drop=True)


def score_partition(settings: Settings, model: str, day: str, source: str | None = None) -> dict:
    """Score the partition with the champion; write `prediction` (multiclass: the label, and
    `probability_<class>` for each class) and `model_version` beside the entity key and
    timestamp. Returns where, how many rows and which version."""
    from maestro import registry, tracking
    from maestro.models import predicted_labels
    from maestro.serving.records import to_columns
    from maestro.serving.scorer import load_scorer
    from maestro.spec import get_spec

    spec = get_spec(model, settings)
    tracking.use_tracking(settings)
    champion = registry.champion_version(settings, model)
    if champion is None:
        raise BadInput(f"{model} has no champion: nothing to score with")
    scorer = load_scorer(model, str(champion.version), settings.scoring_threads)
    frame = read_partition(settings, model, day, source)
    if frame.empty:
        raise BadInput(f"{model}: the partition {day} {source or 'of the spec source'} has no rows")
    missing = [c.name for c in scorer.columns if c.name not in frame.columns]
    if missing:
        raise BadInput(f"{model} partition {day}: missing feature column(s) {', '.join(missing)}")
    features = frame[[c.name for c in scorer.columns]].astype(object).where(frame.notna(), None)
    table = to_columns(features.to_dict("records"), scorer.columns)
    keys = [c for c in (spec.entity.key, spec.timestamp.column) if c in frame.columns]
    out = frame[keys].copy()
    scores = scorer.score(table)
    if scorer.classes is None:
        out["prediction"] = scores
    else:  # the label, and every class's probability beside it
        out["prediction"] = predicted_labels(scores, scorer.classes)
        for code, label in enumerate(scorer.classes):
            out[f"probability_{label}"] = scores[:, code]
    out["model_version"] = scorer.version
    out["scored_at"] = pd.Timestamp.now(tz="UTC")
    return {
        "rows": len(out),
        "model_version": scorer.version,
        "output": write_scores(settings, model, day, out),
    }

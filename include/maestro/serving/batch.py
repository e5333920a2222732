"""Batch scoring: one data partition (a day of the spec's source, or a file) scored by the
champion, written with the model version on every row."""

from __future__ import annotations

import pandas as pd

from maestro.config import Settings
from maestro.errors import BadInput
from maestro.files import atomic_write
from maestro.serving.predlog import database_engine, is_database

TABLE = "batch_predictions"


def read_partition(settings: Settings, model: str, day: str, source: str | None) -> pd.DataFrame:
    """The rows of `day` (UTC) from the spec's source, or every row of a parquet/CSV file."""
    from maestro.data import sources
    from maestro.spec import get_spec, normalise_name

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
    """Score the partition with the champion; write `prediction` and `model_version` beside the
    entity key and timestamp. Returns where, how many rows and which version."""
    from maestro import tracking
    from maestro.governance import registry
    from maestro.serving.scorer import load_scorer, to_columns
    from maestro.spec import get_spec

    spec = get_spec(model, settings)
    tracking.client(settings)
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
    out["prediction"] = scorer.score(table)
    out["model_version"] = scorer.version
    out["scored_at"] = pd.Timestamp.now(tz="UTC")
    return {
        "rows": len(out),
        "model_version": scorer.version,
        "output": write_scores(settings, model, day, out),
    }


def write_scores(settings: Settings, model: str, day: str, scores: pd.DataFrame) -> str:
    """Replace the partition's scores in one step: a re-run never leaves two copies."""
    location = settings.batch_output or str(settings.home / "batch_scores")
    if is_database(location):
        from sqlalchemy import text

        engine = database_engine(location)
        rows = scores.assign(model=model, partition=day)
        with engine.begin() as conn:
            if engine.dialect.has_table(conn, TABLE):
                conn.execute(
                    # B608: constant table, bound values
                    text(f"DELETE FROM {TABLE} WHERE model = :m AND partition = :d"),  # nosec B608
                    {"m": model, "d": day},
                )
            rows.to_sql(TABLE, conn, if_exists="append", index=False)
        return f"{location.rsplit('@', 1)[-1]} table {TABLE}"
    from pathlib import Path

    folder = Path(location) / model / f"date={day}"
    path = folder / "predictions.parquet"
    atomic_write(path, lambda tmp: scores.to_parquet(tmp, index=False))
    return str(path)


def read_scores(settings: Settings, model: str) -> pd.DataFrame:
    """Every batch score of `model` (entity key, event timestamp, prediction, version)."""
    location = settings.batch_output or str(settings.home / "batch_scores")
    if is_database(location):
        from sqlalchemy import inspect, text

        engine = database_engine(location)
        if not inspect(engine).has_table(TABLE):
            return pd.DataFrame()
        with engine.connect() as conn:
            # B608: constant table, bound values
            query = text(f"SELECT * FROM {TABLE} WHERE model = :m")  # nosec B608
            return pd.read_sql(query, conn, params={"m": model})
    from pathlib import Path

    files = sorted((Path(location) / model).glob("date=*/predictions.parquet"))
    return (
        pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
        if files
        else pd.DataFrame()
    )

"""Ground truth: labels for earlier predictions, stored beside the prediction log.

A label is keyed by the request that was answered (`request_id`, and `row` for a batch request)
or, for batch scores, by the entity key and event timestamp. Labels may arrive days late: each
keeps when it was received, and the monitoring job joins whatever has arrived by then.
Storage follows the prediction log: parquet under `feedback/model=<m>/` beside the log's folder,
or the table `feedback` in the log's PostgreSQL database.
"""

from __future__ import annotations

import datetime as dt
import math
import uuid
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from maestro.config import Settings
from maestro.files import atomic_write
from maestro.serving.predlog import database_engine, is_database
from maestro.spec import ModelSpec

TABLE = "feedback"
COLUMNS = ["request_id", "row", "entity", "event_timestamp", "label", "received_at"]


@dataclass(frozen=True)
class Refusal:
    index: int  # position in what was sent
    key: str
    reason: str


def location(settings: Settings) -> str:
    """Beside the prediction log: the same database, or a `feedback` folder next to its folder."""
    log = settings.prediction_log_location
    if is_database(log):
        return log
    return str(Path(log).parent / "feedback")


def parse_label(value, spec: ModelSpec) -> float:
    """A label as the model's target is encoded (0/1 for classifiers), or ValueError saying
    what is accepted."""
    if spec.task == "binary_classification":
        positive = spec.target.positive
        if isinstance(value, bool) or (isinstance(value, int | float) and value in (0, 1)):
            return float(value)
        if positive is not None and isinstance(value, str) and value == positive:
            return 1.0
        shown = f" (1 = {positive!r})" if positive else ""
        raise ValueError(f"label must be 0 or 1{shown}, got {value!r}")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"label must be a finite number, got {value!r}")
    return float(value)


def store(settings: Settings, model: str, labels: pd.DataFrame) -> int:
    """Append accepted labels (columns of `COLUMNS`); returns how many."""
    if labels.empty:
        return 0
    frame = labels.reindex(columns=COLUMNS).copy()
    frame["received_at"] = pd.Timestamp.now(tz="UTC")
    frame["row"] = frame["row"].fillna(0).astype("int64")
    frame["label"] = frame["label"].astype("float64")
    frame["event_timestamp"] = pd.to_datetime(frame["event_timestamp"], utc=True)
    frame["request_id"] = frame["request_id"].astype("string")
    frame["entity"] = frame["entity"].astype("string")
    where = location(settings)
    if is_database(where):
        with database_engine(where).begin() as conn:
            frame.assign(model=model).to_sql(TABLE, conn, if_exists="append", index=False)
        return len(frame)
    day = f"{dt.datetime.now(dt.UTC):%Y-%m-%d}"
    path = Path(where) / f"model={model}" / f"received={day}" / f"{uuid.uuid4().hex}.parquet"
    atomic_write(path, lambda tmp: frame.to_parquet(tmp, index=False))
    return len(frame)


def read(settings: Settings, model: str) -> pd.DataFrame:
    """Every label received for `model`, the latest per key when a key was labelled twice."""
    where = location(settings)
    if is_database(where):
        from sqlalchemy import inspect, text

        engine = database_engine(where)
        if not inspect(engine).has_table(TABLE):
            return pd.DataFrame(columns=COLUMNS)
        with engine.connect() as conn:
            frame = pd.read_sql(
                text(f"SELECT * FROM {TABLE} WHERE model = :m"), conn, params={"m": model}
            ).drop(columns="model")
    else:
        files = sorted((Path(where) / f"model={model}").glob("received=*/*.parquet"))
        if not files:
            return pd.DataFrame(columns=COLUMNS)
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    frame = frame.sort_values("received_at", kind="stable")
    keys = ["request_id", "row", "entity", "event_timestamp"]
    return frame.drop_duplicates(keys, keep="last").reset_index(drop=True)

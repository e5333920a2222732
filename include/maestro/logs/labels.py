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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from maestro.config import Settings
from maestro.errors import BadInput
from maestro.logs.predictions import known_requests, prediction_store
from maestro.logs.scores import read_scores
from maestro.logs.store import Store
from maestro.spec import ModelSpec

TABLE = "feedback"
COLUMNS = ["request_id", "row", "entity", "event_timestamp", "label", "received_at"]


@dataclass(frozen=True)
class Refusal:
    index: int  # position in what was sent
    key: str
    reason: str


def labels_store(settings: Settings) -> Store:
    """Beside the prediction log: the same database, or a `feedback` folder next to its folder
    (`model=<m>/received=<day>/`)."""
    return prediction_store(settings.prediction_log_location).beside(TABLE, partition="received")


def parse_label(value: Any, spec: ModelSpec) -> float:
    """A label as the model's target is encoded (0/1 for binary classifiers, the class's code
    for multiclass ones), or ValueError saying what is accepted."""
    if hasattr(value, "item"):  # a NumPy scalar from a file
        value = value.item()
    if spec.task == "binary_classification":
        positive = spec.target.positive
        if isinstance(value, bool) or (isinstance(value, int | float) and value in (0, 1)):
            return float(value)
        if positive is not None and isinstance(value, str) and value == positive:
            return 1.0
        if isinstance(value, str) and value.strip() in ("0", "1"):  # as a CSV or form sends it
            return float(value.strip())
        shown = f" (1 = {positive!r})" if positive else ""
        raise ValueError(f"label must be 0 or 1{shown}, got {value!r}")
    if spec.multiclass:
        return float(class_code(value, spec.classes))
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"label must be a finite number, got {value!r}")
    return float(value)


def class_code(value: Any, classes: list[str]) -> int:
    """A multiclass label's place in the spec's classes: the label as the data has it, a string
    (a whole number may come as one); ValueError naming the classes otherwise."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and value.strip() in classes:
        return classes.index(value.strip())
    raise ValueError(f"label must be one of the classes {classes}, got {value!r}")


def store_labels(settings: Settings, model: str, labels: pd.DataFrame) -> int:
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
    day = f"{dt.datetime.now(dt.UTC):%Y-%m-%d}"
    labels_store(settings).append(model, day, frame)
    return len(frame)


def read_labels(settings: Settings, model: str) -> pd.DataFrame:
    """Every label received for `model`, the latest per key when a key was labelled twice."""
    frame = labels_store(settings).read(model)
    if frame.empty:
        return pd.DataFrame(columns=COLUMNS)
    frame = frame.drop(columns="model")
    frame = frame.sort_values("received_at", kind="stable")
    keys = ["request_id", "row", "entity", "event_timestamp"]
    return frame.drop_duplicates(keys, keep="last").reset_index(drop=True)


def _read_table(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    if path.suffix not in (".csv", ".parquet", ".pq"):
        raise BadInput(f"{path}: labels must be a .csv or .parquet file")
    try:
        if path.suffix == ".csv":
            return pd.read_csv(path, dtype={"request_id": str})
        return pd.read_parquet(path)
    except UnicodeDecodeError as error:
        raise BadInput(f"{path}: not UTF-8 text (byte {error.start}): not a CSV file") from None
    except pd.errors.EmptyDataError:
        raise BadInput(f"{path}: the file is empty") from None
    except (pd.errors.ParserError, OSError, ValueError) as error:
        raise BadInput(f"{path}: cannot be read as {path.suffix[1:]}: {error}") from None


def _row_number(value: Any) -> int | None:
    """A batch row's index as given (a whole number from 0), or None."""
    if isinstance(value, str):
        value = value.strip()
        return int(value) if value.isdigit() else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return int(value) if value >= 0 and value == int(value) else None


def from_file(
    settings: Settings, spec: ModelSpec, path: Path, label: str | None = None
) -> tuple[int, list[Refusal]]:
    """Load a file of labels keyed by `request_id` (and `row`), or by the spec's entity key and
    event timestamp (labels for batch scores). Each row is judged alone: refused rows come
    back with the reason, accepted ones are stored."""
    frame = _read_table(path)
    label = label or next((c for c in (spec.target.name, "label") if c in frame.columns), None)
    if label is None or label not in frame.columns:
        raise BadInput(
            f"{path}: no label column (give --label, or name it {spec.target.name!r} or 'label')"
        )
    key, ts = spec.entity.key, spec.timestamp.column
    if "request_id" in frame.columns:
        ids = frame["request_id"].astype(str)
        rows = frame["row"] if "row" in frame.columns else pd.Series(0, index=frame.index)
        known = known_requests(settings.prediction_log_location, spec.name, sorted(set(ids)))

        numbers = [_row_number(value.item() if hasattr(value, "item") else value) for value in rows]

        def problem(i: int) -> str | None:
            if ids[i] not in known:
                return f"unknown request_id {ids[i]!r} for {spec.name}"
            if numbers[i] is None:
                return f"row must be a whole number from 0, got {rows[i]!r}"
            if numbers[i] >= known[ids[i]]:
                return (
                    f"row {rows[i]} is out of range: request {ids[i]} scored {known[ids[i]]} rows"
                )
            return None

        keyed = pd.DataFrame({"request_id": ids, "row": [n or 0 for n in numbers]})
    elif {key, ts} <= set(frame.columns):
        scores = read_scores(settings, spec.name)
        stamps = pd.to_datetime(frame[ts], utc=True, errors="coerce")
        entities = frame[key].astype(str)
        scored = (
            set(zip(scores[key].astype(str), pd.to_datetime(scores[ts], utc=True), strict=True))
            if not scores.empty
            else set()
        )

        def problem(i: int) -> str | None:
            if pd.isna(stamps[i]):
                return f"{ts} {frame[ts][i]!r} is not a timestamp"
            if (entities[i], stamps[i]) not in scored:
                return f"no batch score of {key}={entities[i]} at {stamps[i].isoformat()}"
            return None

        keyed = pd.DataFrame({"entity": entities, "event_timestamp": stamps})
    else:
        raise BadInput(
            f"{path}: labels need a request_id column, or the entity key {key!r} and the "
            f"timestamp {ts!r} of batch scores"
        )
    frame = frame.reset_index(drop=True)
    accepted, refused, values = [], [], []
    for i in range(len(frame)):
        reason = problem(i)
        if reason is None:
            try:
                values.append(parse_label(frame[label][i], spec))
            except ValueError as error:
                reason = str(error)
        if reason is None:
            accepted.append(i)
        else:
            refused.append(Refusal(i, str(keyed.iloc[i, 0]), reason))
    stored = store_labels(settings, spec.name, keyed.iloc[accepted].assign(label=values))
    return stored, refused

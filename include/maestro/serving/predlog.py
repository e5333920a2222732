"""The prediction log: every scored row with its features, prediction, model version, latency
and time, for drift monitoring to read.

Requests only append a reference to a buffer; a background thread writes the buffer out every
`interval` seconds (and once more on close), as parquet partitioned by model and date, or
into a PostgreSQL table when the log's location is a `postgresql://` URL. A server stopped
normally writes everything it acknowledged; a killed one loses at most the last interval.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import logging
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

TABLE = "prediction_log"


@dataclass(frozen=True)
class Entry:
    at: dt.datetime
    request_id: str
    model: str
    version: str
    role: str  # primary | shadow
    latency_ms: float
    features: dict[str, list]
    predictions: np.ndarray


class PredictionLog:
    def __init__(self, location: str, interval: float = 1.0) -> None:
        self.location = location
        self.interval = interval
        self._buffer: list[Entry] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self.written = 0
        self._sink = PostgresSink(location) if is_database(location) else ParquetSink(location)
        self._thread.start()

    def append(self, entry: Entry) -> None:
        self._buffer.append(entry)  # list.append is atomic under the GIL

    def flush(self) -> int:
        """Write out the buffer; what fails to write goes back into it for the next try."""
        with self._lock:
            entries, self._buffer = self._buffer, []
            failed: list[Entry] = []
            for model, group in itertools.groupby(
                sorted(entries, key=lambda e: e.model), key=lambda e: e.model
            ):
                group = list(group)
                try:
                    self.written += self._sink.write(model, group)
                except Exception:
                    log.exception(
                        "prediction log: writing %d entries of %s failed", len(group), model
                    )
                    failed += group
            self._buffer[:0] = failed
        return len(entries) - len(failed)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.flush()


def is_database(location: str) -> bool:
    return location.startswith(("postgresql://", "postgresql+psycopg2://"))


def database_engine(url: str):
    """An SQLAlchemy engine for a `postgresql://` location (psycopg2 driver)."""
    from sqlalchemy import create_engine

    return create_engine(url.replace("postgresql://", "postgresql+psycopg2://", 1))


def _arrow_table(entries: list[Entry]):
    """The entries as one Arrow table, a row per scored row, built column by column (no
    pandas: a flush of 50,000 rows then costs a fraction of what a DataFrame would)."""
    import pyarrow as pa

    sizes = [len(e.predictions) for e in entries]
    micros = np.array([e.at.timestamp() * 1e6 for e in entries]).astype("int64")
    columns = {
        "ts": pa.array(np.repeat(micros, sizes), type=pa.timestamp("us", tz="UTC")),
        "request_id": pa.array(np.repeat([e.request_id for e in entries], sizes)),
        "model": pa.array(np.repeat([e.model for e in entries], sizes)),
        "version": pa.array(np.repeat([e.version for e in entries], sizes)),
        "role": pa.array(np.repeat([e.role for e in entries], sizes)),
        "latency_ms": pa.array(np.repeat([e.latency_ms for e in entries], sizes)),
        "prediction": pa.array(np.concatenate([e.predictions for e in entries])),
    }
    for name in entries[0].features:
        values = list(itertools.chain.from_iterable(e.features[name] for e in entries))
        columns[f"feature.{name}"] = pa.array(values, from_pandas=True)
    return pa.table(columns)


class ParquetSink:
    def __init__(self, root: str) -> None:
        self.root = Path(root)

    def write(self, model: str, entries: list[Entry]) -> int:
        """One parquet file per flush."""
        import pyarrow.parquet as pq

        table = _arrow_table(entries)
        day = entries[0].at.date().isoformat()
        folder = self.root / f"model={model}" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{entries[0].at:%H%M%S%f}-{uuid.uuid4().hex[:8]}.parquet"
        tmp = folder / f".{name}"
        pq.write_table(table, tmp)
        tmp.rename(folder / name)  # readers never see a half-written file
        return table.num_rows


class PostgresSink:
    def __init__(self, url: str) -> None:
        from sqlalchemy import text

        self.engine = database_engine(url)
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (ts timestamptz NOT NULL, "
                    "request_id text NOT NULL, model text NOT NULL, version text NOT NULL, "
                    "role text NOT NULL, latency_ms double precision, "
                    "prediction double precision, features jsonb NOT NULL)"
                )
            )

    def write(self, model: str, entries: list[Entry]) -> int:
        """One multi-row INSERT per flush; the features of a row as one JSON object."""
        table = _arrow_table(entries)
        meta = table.select([c for c in table.column_names if not c.startswith("feature.")])
        frame = meta.to_pandas()
        names = list(entries[0].features)
        frame["features"] = [  # validated values: JSON-native, null for missing, finite
            json.dumps(dict(zip(names, row, strict=True)))
            for e in entries
            for row in zip(*(e.features[n] for n in names), strict=True)
        ]
        with self.engine.begin() as conn:
            frame.to_sql(TABLE, conn, if_exists="append", index=False, method="multi")
        return len(frame)


def read_log(location: str, model: str):
    """Every logged row of `model` as a DataFrame (features as `feature.<name>` columns)."""
    import pandas as pd

    if is_database(location):
        from sqlalchemy import text

        with database_engine(location).connect() as conn:
            frame = pd.read_sql(
                text(f"SELECT * FROM {TABLE} WHERE model = :m ORDER BY ts"),
                conn,
                params={"m": model},
            )
        features = pd.json_normalize(frame.pop("features").tolist()).add_prefix("feature.")
        return pd.concat([frame, features], axis=1)
    folder = Path(location) / f"model={model}"
    files = sorted(folder.glob("date=*/part-*.parquet"))
    if not files:
        return pd.DataFrame()
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)

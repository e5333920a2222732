"""The prediction log's table: every scored row with its features, prediction, model version,
latency and time, for drift monitoring to read. Its entries (one answered request each) become
rows here, written by a sink into the log's store (parquet partitioned by model and date, or
one PostgreSQL table filled by COPY), and read back by the queries below."""

from __future__ import annotations

import datetime as dt
import itertools
import json
from collections.abc import Collection, Iterable
from typing import Any, NamedTuple

import numpy as np

from maestro.logs.objects import ObjectStore
from maestro.logs.parquet import ParquetStore
from maestro.logs.postgres import PostgresStore
from maestro.logs.store import Condition, Store, open_store
from maestro.vocabulary import PRIMARY

TABLE = "prediction_log"


def prediction_store(location: str) -> Store:
    """The prediction log at `location` (a folder, a `postgresql://` URL or an object-storage
    URL, reached with the Airflow connection `MAESTRO_PREDICTION_LOG_CONN_ID`)."""
    from maestro.config import get_settings

    conn_id = get_settings().prediction_log_conn_id
    return open_store(location, TABLE, expand=("features", "feature."), conn_id=conn_id)


class Entry(NamedTuple):
    """One answered request (or one shadow scoring of it)."""

    at: float  # seconds since the epoch
    request_id: str
    model: str
    version: str
    role: str  # primary | shadow
    latency_ms: float
    names: tuple[str, ...]  # the signature's columns
    body: bytes  # the features as validated, in the form below
    predictions: bytes  # float64, one per record
    # "columns": a JSON object of one array per feature (what the server logs, `columns_body`);
    # "records": one JSON record or an array of them
    form: str = "records"

    @property
    def rows(self) -> int:
        return len(self.predictions) // 8


class Rows(NamedTuple):
    """Entries flattened to columns: one row per scored record."""

    meta: dict[str, np.ndarray]  # ts, request_id, model, version, role, latency_ms, prediction
    features: dict[str, list]  # every feature's values, in first-seen order of the names


def rows_of(entries: list[Entry]) -> Rows:
    """Columns of every entry's rows. A "columns" body is taken column by column, whole; a
    "records" body is read record by record. A feature an entry lacks (another version's
    signature) is null in its rows."""
    import orjson

    names = list(dict.fromkeys(itertools.chain.from_iterable(e.names for e in entries)))
    features: dict[str, list] = {name: [] for name in names}
    for entry in entries:
        try:
            body = orjson.loads(entry.body)
        except orjson.JSONDecodeError:  # what only the standard parser takes (big integers)
            body = json.loads(entry.body)
        if entry.form == "records":
            records = [body] if isinstance(body, dict) else body
            body = {name: [record.get(name) for record in records] for name in entry.names}
        rows = entry.rows
        for name, values in features.items():
            given = body.get(name)
            if given is None:
                values.extend([None] * rows)
            elif len(given) != rows:
                raise ValueError(f"feature {name!r} has {len(given)} values for {rows} rows")
            else:
                values.extend(given)
    sizes = [e.rows for e in entries]
    micros = (np.array([e.at for e in entries]) * 1e6).astype("int64")
    meta = {
        "ts": np.repeat(micros, sizes),
        "request_id": np.repeat([e.request_id for e in entries], sizes),
        "model": np.repeat([e.model for e in entries], sizes),
        "version": np.repeat([e.version for e in entries], sizes),
        "role": np.repeat([e.role for e in entries], sizes),
        "latency_ms": np.repeat([e.latency_ms for e in entries], sizes),
        "prediction": np.concatenate(
            [np.frombuffer(e.predictions, dtype=np.float64) for e in entries]
        ),
    }
    return Rows(meta, features)


def arrow_table(rows: Rows) -> Any:
    """One Arrow table, built column by column (no pandas: a flush of 50,000 rows then costs a
    fraction of what a DataFrame would)."""
    import pyarrow as pa

    columns = {
        name: pa.array(values, type=pa.timestamp("us", tz="UTC") if name == "ts" else None)
        for name, values in rows.meta.items()
    }
    for name, values in rows.features.items():
        columns[f"feature.{name}"] = pa.array(values, from_pandas=True)
    return pa.table(columns)


class ParquetSink:
    """Parquet under `model=<m>/date=<d>/`: one small file per write (a second of traffic),
    merged as they pile up, so a day under steady traffic is a few dozen files, not 86,400."""

    def __init__(self, store: ParquetStore | ObjectStore) -> None:
        self.store = store
        if isinstance(store, ParquetStore):
            store.root.mkdir(parents=True, exist_ok=True)

    def prepare(self, rows: Rows) -> Any:
        return arrow_table(rows)

    def write(self, model: str, table: Any) -> None:
        """One parquet file per batch and day."""
        import pyarrow.compute as pc

        days = pc.strftime(table["ts"], format="%Y-%m-%d")
        for day in pc.unique(days).to_pylist():
            self.store.append_table(model, day, table.filter(pc.equal(days, day)))


class PostgresSink:
    """Rows into the log's table by COPY, one per write."""

    def __init__(self, store: PostgresStore) -> None:
        from sqlalchemy import text

        self.engine = store.engine
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (ts timestamptz NOT NULL, "
                    "request_id text NOT NULL, model text NOT NULL, version text NOT NULL, "
                    "role text NOT NULL, latency_ms double precision, "
                    "prediction double precision, features jsonb NOT NULL)"
                )
            )

    def prepare(self, rows: Rows) -> str:
        """The rows as COPY's text format, the features of each as one JSON object that jsonb
        takes: a NUL character or a lone surrogate raises ValueError before anything is
        written."""
        for name, values in rows.features.items():
            text = "".join(v for v in values if type(v) is str)
            if "\x00" in text:
                raise ValueError(f"feature {name!r} holds a NUL character, which jsonb cannot hold")
        meta = rows.meta
        columns = (
            np.datetime_as_string(meta["ts"].astype("datetime64[us]"), unit="us").tolist(),
            meta["request_id"].tolist(),
            meta["model"].tolist(),
            meta["version"].tolist(),
            meta["role"].tolist(),
            list(map(repr, meta["latency_ms"].tolist())),  # repr: every float, nan and inf too
            list(map(repr, meta["prediction"].tolist())),
            [text.replace("\\", "\\\\") for text in json_objects(rows.features, len(meta["ts"]))],
        )
        return "\n".join(map("\t".join, zip(*columns, strict=True))) + "\n"

    def write(self, model: str, text: str) -> None:
        """One COPY per write, in one transaction (its timestamps are UTC)."""
        import io

        connection = self.engine.raw_connection()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL TIME ZONE 'UTC'")
                cursor.copy_expert(
                    f"COPY {TABLE} ({', '.join(COPY_COLUMNS)}) FROM STDIN", io.StringIO(text)
                )
            connection.commit()
        finally:
            connection.close()


def json_objects(features: dict[str, list], rows: int) -> list[str]:
    """Each row's features as one JSON object, built column by column: a column of numbers (or
    booleans, or nulls) is encoded in one call and split at its commas, text value by value;
    then each row is one join of keys and values. A lone surrogate raises orjson's
    JSONEncodeError (a ValueError)."""
    import orjson

    if not features:
        return ["{}"] * rows
    pieces: list[Iterable[str]] = []
    for i, (name, values) in enumerate(features.items()):
        pieces.append(
            itertools.repeat(("{" if i == 0 else ",") + orjson.dumps(name).decode() + ":")
        )
        if set(map(type, values)) <= {int, float, bool, type(None)}:
            pieces.append(orjson.dumps(values).decode()[1:-1].split(","))
        else:
            pieces.append([orjson.dumps(v).decode() for v in values])
    pieces.append(itertools.repeat("}"))
    return list(map("".join, zip(*pieces, strict=False)))  # the keys repeat without end


COPY_COLUMNS = (
    "ts",
    "request_id",
    "model",
    "version",
    "role",
    "latency_ms",
    "prediction",
    "features",
)


def sink_for(store: Store) -> ParquetSink | PostgresSink:
    """The writer's sink for the log's store: Arrow tables for parquet, COPY for PostgreSQL."""
    if isinstance(store, ParquetStore | ObjectStore):
        return ParquetSink(store)
    if isinstance(store, PostgresStore):
        return PostgresSink(store)
    raise TypeError(f"no prediction log sink for {type(store).__name__}")


def read_log(
    location: str,
    model: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    role: str | None = None,
    columns: list[str] | None = None,
    request_ids: Collection[str] | None = None,
) -> Any:
    """Logged rows of `model` as a DataFrame (features as `feature.<name>` columns) in time
    order, those at or after `start` and before `end` (aware datetimes) when given, of one
    `role` and of the `request_ids` when given; only `columns` (and `ts`) when given."""
    import pandas as pd

    where: list[Condition] = []
    if start is not None:
        where.append(("ts", ">=", pd.Timestamp(start)))
    if end is not None:
        where.append(("ts", "<", pd.Timestamp(end)))
    if role is not None:
        where.append(("role", "=", role))
    if request_ids is not None:
        where.append(("request_id", "in", request_ids))
    days = tuple(f"{t.astimezone(dt.UTC):%Y-%m-%d}" if t else None for t in (start, end))
    if columns is not None:
        columns = ["ts", *(c for c in columns if c != "ts")]
    store = prediction_store(location)
    frame = store.read(model, where, partitions=(days[0], days[1]), columns=columns)
    if frame.empty:
        return pd.DataFrame(columns=columns or [])
    return frame.sort_values("ts", kind="stable", ignore_index=True)


def has_log(location: str, model: str) -> bool:
    """Whether anything was ever logged for `model` at `location`."""
    return prediction_store(location).has(model)


def known_requests(location: str, model: str, ids: list[str]) -> dict[str, int]:
    """How many rows each of `ids` scored for `model` (primary role), from the log itself."""
    if not ids:
        return {}
    found = prediction_store(location).read(
        model,
        [("role", "=", PRIMARY), ("request_id", "in", list(ids))],
        columns=["request_id"],
    )
    return {str(k): int(n) for k, n in found["request_id"].value_counts().items()}

"""Ingest: read a spec's source for a run's window into an immutable, content-addressed snapshot.

Structural problems (no file, empty or unreadable file, missing or undeclared columns, values
of the wrong type, a one-class target) stop here with one message naming the file and column;
the statistical checks are the Great Expectations suite's job (`maestro.data.validation`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from maestro.config import Settings
from maestro.errors import DataError
from maestro.files import atomic_write, atomic_write_text
from maestro.spec import ModelSpec
from maestro.spec.fields import normalise_name
from maestro.spec.sources import CsvSource, DemoSource, ParquetSource, SqlSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataVersion:
    """What a run trained on: the reference tasks pass instead of the data."""

    model: str
    hash: str
    path: str
    rows: int
    start: str
    end: str
    source: str

    def to_dict(self) -> dict[str, str | int]:
        return asdict(self)


def _describe_source(spec: ModelSpec, settings: Settings) -> str:
    source = spec.source
    if isinstance(source, SqlSource):
        if source.conn_id is not None:
            return f"sql query via connection {source.conn_id}"
        return f"sql query via ${source.connection_env}"
    if isinstance(source, DemoSource):
        return f"generated demo data (seed {source.seed})"
    return source.path if source.in_object_storage else str(spec.source_path(settings))


Window = tuple[pd.Timestamp | None, pd.Timestamp | None]


def read_source(spec: ModelSpec, settings: Settings, window: Window = (None, None)) -> pd.DataFrame:
    """The raw source table with normalised column names. A SQL source and a partitioned
    parquet source read no more than the `[start, end)` window's rows and partitions; the
    exact window is still applied by `ingest`."""
    source = spec.source
    origin = _describe_source(spec, settings)
    if isinstance(source, DemoSource):
        from maestro.data.synthetic import generate

        frame = generate(source.rows, source.seed, source.drift, source.bias, source.noise)
    elif isinstance(source, SqlSource):
        from maestro.data.sql import pushdown_filter, read_query

        frame = read_query(source, pushdown_filter(spec, window), origin)
    else:
        frame = _read_file(source, spec.source_path(settings), origin, window)
    if frame.empty:
        raise DataError(f"{origin}: the source has no rows")
    frame.columns = [normalise_name(str(c)) for c in frame.columns]
    return frame


def _read_file(
    source: CsvSource | ParquetSource, local: Path | None, origin: str, window: Window
) -> pd.DataFrame:
    """A CSV or parquet file, or a parquet folder, on the local disk or in object storage."""
    from maestro.data.storage import describe_reach_error, open_store, reach_errors, read_partitions

    fs, path = open_store(source, local)
    try:
        if isinstance(source, ParquetSource) and source.partition_key:
            return read_partitions(fs, path, source.partition_key, window, origin)
        if not fs.exists(path):
            raise DataError(f"{origin}: source file not found")
        if fs.isdir(path) and isinstance(source, ParquetSource):
            return pd.read_parquet(path, filesystem=fs)
        if fs.size(path) == 0:
            raise DataError(f"{origin}: source file is empty")
        with fs.open(path, "rb") as handle:
            if isinstance(source, ParquetSource):
                return pd.read_parquet(handle)
            return pd.read_csv(
                handle,
                na_values=source.na_values,
                skipinitialspace=True,
                encoding=source.encoding,
                low_memory=False,
            )
    except DataError:
        raise
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{origin}: cannot be decoded as {getattr(source, 'encoding', 'utf-8')} "
            f"(byte {exc.start}); set source.encoding in the spec"
        ) from exc
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{origin}: source file has no columns or rows") from exc
    except (pd.errors.ParserError, ValueError) as exc:
        raise DataError(f"{origin}: cannot be read as {source.format}: {exc}") from exc
    except reach_errors() as exc:
        raise DataError(f"{origin}: {describe_reach_error(exc)}") from exc


def add_keys(frame: pd.DataFrame, spec: ModelSpec, origin: str) -> pd.DataFrame:
    """Add (or synthesise) the entity key and the event timestamp the spec asks for."""
    frame = frame.copy()
    if spec.entity.synthesize:
        frame[spec.entity.key] = range(1, len(frame) + 1)
    elif spec.entity.key not in frame.columns:
        raise DataError(f"{origin}: entity key column {spec.entity.key!r} is missing")
    ts = spec.timestamp
    if ts.synthesize_start:
        start = pd.Timestamp(ts.synthesize_start, tz="UTC")
        steps = pd.timedelta_range(start=0, periods=len(frame), freq=ts.synthesize_every)
        frame[ts.column] = pd.Series(start + steps, index=frame.index)
    elif ts.from_date:
        for col in (ts.from_date, ts.from_hour):
            if col and col not in frame.columns:
                raise DataError(f"{origin}: timestamp column {col!r} is missing")
        stamp = pd.to_datetime(frame[ts.from_date], errors="coerce", utc=True)
        if ts.from_hour:
            stamp = stamp + pd.to_timedelta(frame[ts.from_hour], unit="h")
        frame[ts.column] = stamp
    elif ts.column not in frame.columns:
        raise DataError(f"{origin}: event timestamp column {ts.column!r} is missing")
    frame[ts.column] = pd.to_datetime(frame[ts.column], errors="coerce", utc=True)
    if frame[ts.column].isna().any():
        bad = int(frame[ts.column].isna().sum())
        raise DataError(f"{origin}: column {ts.column!r} has {bad} values that are not timestamps")
    return frame


def conform(frame: pd.DataFrame, spec: ModelSpec, origin: str) -> pd.DataFrame:
    """Exactly the spec's columns, in order, with the spec's types; errors name the column."""
    key, ts = spec.entity.key, spec.timestamp.column
    used = {key, ts, spec.target.name, *spec.feature_names}
    helpers = {spec.timestamp.from_date, spec.timestamp.from_hour} - {None}
    missing = [c for c in [*spec.feature_names, spec.target.name] if c not in frame.columns]
    if missing:
        raise DataError(f"{origin}: missing columns {missing} declared in the spec")
    extra = [c for c in frame.columns if c not in used | helpers | set(spec.drop)]
    if extra:
        raise DataError(
            f"{origin}: undeclared columns {extra}; add them to features or to drop in the spec"
        )
    out = frame[[key, ts, *spec.feature_names, spec.target.name]].copy()
    for feature in spec.features:
        column = out[feature.name]
        if feature.type == "category":
            out[feature.name] = column.astype("string").astype(object).where(column.notna(), None)
            continue
        numeric = pd.to_numeric(column, errors="coerce")
        wrong = column.notna() & numeric.isna()
        if wrong.any():
            example = column[wrong].iloc[0]
            raise DataError(
                f"{origin}: column {feature.name!r} should be {feature.type} but has "
                f"{int(wrong.sum())} non-numeric values (e.g. {example!r})"
            )
        if feature.type == "int" and numeric.notna().all() and (numeric % 1 == 0).all():
            out[feature.name] = numeric.astype("int64")
        else:
            out[feature.name] = numeric.astype("float64")
    out[spec.target.name] = encode_target(out[spec.target.name], spec, origin)
    return out.sort_values([ts, key], kind="stable").reset_index(drop=True)


def encode_target(target: pd.Series, spec: ModelSpec, origin: str) -> pd.Series:
    """Binary targets become 0/1 (1 = `target.positive`); regression targets floats; multiclass
    targets stay labels (strings) until `encode_classes` numbers them after windowing."""
    name = spec.target.name
    if target.isna().any():
        raise DataError(f"{origin}: target column {name!r} has {int(target.isna().sum())} nulls")
    if spec.task == "regression":
        numeric = pd.to_numeric(target, errors="coerce")
        if numeric.isna().any():
            raise DataError(f"{origin}: regression target {name!r} has non-numeric values")
        return numeric.astype("float64")
    labels = target.astype(str).str.strip().str.rstrip(".")
    if spec.multiclass:
        return labels
    classes = sorted(labels.unique())
    if len(classes) < 2:
        raise DataError(f"{origin}: target {name!r} has a single class {classes}; need two")
    if len(classes) > 2:
        raise DataError(
            f"{origin}: target {name!r} has {len(classes)} classes {classes[:5]}; "
            "binary classification needs two"
        )
    positive = spec.target.positive if spec.target.positive is not None else classes[-1]
    if positive not in classes:
        raise DataError(f"{origin}: target.positive {positive!r} is not one of {classes}")
    return (labels == positive).astype("int64")


def encode_classes(target: pd.Series, spec: ModelSpec, origin: str) -> pd.Series:
    """A multiclass target's labels as codes 0..k-1, their place in `target.classes`;
    DataError for a label the spec does not list, or a single class."""
    classes = spec.classes
    present = set(target.unique())
    unknown = sorted(present - set(classes))
    if unknown:
        raise DataError(
            f"{origin}: target {spec.target.name!r} has labels {unknown} that are not in "
            f"target.classes {classes}"
        )
    if len(present) < 2:
        raise DataError(
            f"{origin}: target {spec.target.name!r} has {len(present)} class {sorted(present)} "
            "in the training window; multiclass classification needs at least two"
        )
    return target.map({label: code for code, label in enumerate(classes)}).astype("int64")


def window_bounds(
    spec: ModelSpec, run_end: pd.Timestamp | None
) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
    """The half-open [start, end) training window for a run ending at `run_end`."""
    end = pd.Timestamp(spec.window.end, tz="UTC") if spec.window.end else None
    if run_end is not None:
        end = min(end, run_end) if end is not None else run_end
    start = pd.Timestamp(spec.window.start, tz="UTC") if spec.window.start else None
    if spec.window.lookback_days and end is not None:
        lookback = end - pd.Timedelta(days=spec.window.lookback_days)
        start = max(start, lookback) if start is not None else lookback
    return start, end


def content_hash(frame: pd.DataFrame) -> str:
    digest = hashlib.sha256(",".join(f"{c}:{t}" for c, t in frame.dtypes.items()).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def write_snapshot(
    frame: pd.DataFrame,
    spec: ModelSpec,
    settings: Settings,
    source: str,
) -> DataVersion:
    """Write once: a snapshot with the same content is reused, never rewritten. In the
    snapshot store's folder, or its object store (where one PUT is a whole object: a reader
    never sees half of it, as the local write's rename ensures on disk)."""
    digest = content_hash(frame)
    location = settings.snapshot_store_location
    ts = frame[spec.timestamp.column]
    path = f"{location.rstrip('/')}/{spec.name}/{digest}.parquet"
    version = DataVersion(
        model=spec.name,
        hash=digest,
        path=path,
        rows=len(frame),
        start=ts.min().isoformat(),
        end=ts.max().isoformat(),
        source=source,
    )
    described = json.dumps(version.to_dict(), indent=2)
    if "://" not in location:
        local = Path(path)
        if not local.exists():
            local.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(local, lambda tmp: frame.to_parquet(tmp, index=False))
            atomic_write_text(local.with_suffix(".json"), described)
        return version
    from maestro.data.storage import describe_reach_error, reach_errors

    fs, key = _snapshot_store(path, settings)
    try:
        if not fs.exists(key):
            with fs.open(key, "wb") as out:
                frame.to_parquet(out, index=False)
            fs.pipe_file(key.removesuffix(".parquet") + ".json", described.encode())
    except reach_errors() as error:
        problem = describe_reach_error(error, missing="bucket not found")
        raise DataError(f"snapshot store {location}: {problem}") from error
    return version


def _snapshot_store(url: str, settings: Settings) -> tuple[Any, str]:
    from maestro.data.storage import object_store

    return object_store(url, settings.snapshot_store_conn_id, "MAESTRO_SNAPSHOT_STORE_CONN_ID")


def ingest(spec: ModelSpec, settings: Settings, run_end: pd.Timestamp | None) -> DataVersion:
    """Read, check and snapshot the rows of the run's window."""
    origin = _describe_source(spec, settings)
    start, end = window_bounds(spec, run_end)
    raw = read_source(spec, settings, (start, end))
    frame = conform(add_keys(raw, spec, origin), spec, origin)
    ts = frame[spec.timestamp.column]
    if start is not None:
        frame = frame[ts >= start]
    if end is not None:
        frame = frame[frame[spec.timestamp.column] < end]
    if frame.empty:
        raise DataError(f"{origin}: no rows in the training window [{start}, {end})")
    if spec.task == "binary_classification" and frame[spec.target.name].nunique() < 2:
        raise DataError(f"{origin}: target {spec.target.name!r} has a single class in the window")
    frame = frame.reset_index(drop=True)
    if spec.multiclass:
        frame[spec.target.name] = encode_classes(frame[spec.target.name], spec, origin)
    return write_snapshot(frame, spec, settings, origin)


def load_snapshot(version: dict, settings: Settings) -> pd.DataFrame:
    """A run's snapshot, from the folder or the object store it was written to."""
    path = str(version["path"])
    if "://" not in path:
        return pd.read_parquet(path)
    from maestro.data.storage import describe_reach_error, reach_errors

    fs, key = _snapshot_store(path, settings)
    try:
        with fs.open(key, "rb") as snapshot:
            return pd.read_parquet(snapshot)
    except reach_errors() as error:
        problem = describe_reach_error(error, missing="snapshot not found")
        raise DataError(f"snapshot {path}: {problem}") from error

"""Materialization into Feast's online store, written in column-wise batches.

Feast's own `materialize` turns every value into a protobuf object one at a time and its SQLite
store then upserts each (entity, feature) pair with a statement of its own: about 8,000 rows/s
for the demo's nine features, two minutes for a million rows. This module writes the same
bytes in the same layout, so that Feast's own `online_read` (and `get_online_features`) reads
them back unchanged:

- the window's latest row per entity, as Feast's materialization keeps;
- each entity key as Feast serializes it (Feast's prefix, then the value's bytes, checked
  against Feast's own serialization of the first key); each distinct value of a column turned
  into its protobuf bytes once (`pd.factorize`), then spread over the rows;
- SQLite: one `executemany` upsert per batch, in the store's primary-key order; Redis: one
  pipelined HSET per entity (after one pipelined read of the stored event times: as Feast,
  a row no newer than the stored one is skipped).

Other online stores go through Feast's `materialize`. Either way the registry records the
materialized interval (`feast materialize-incremental` starts from it).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

BATCH_ROWS = 100_000
PROTO_FIELDS = {
    "int": "int64_val",
    "float": "double_val",
    "category": "string_val",
    "string": "string_val",
}


def materialize(
    store: Any,
    view: Any,
    frame: pd.DataFrame,
    columns: dict[str, str],
    key: str,
    timestamp: str,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> None:
    """Write `frame`'s rows with `start <= timestamp < end` (the latest per `key`) into the
    store's online store for `view`; `columns` maps the key and each feature to its spec
    type."""
    kind = store.config.online_store.type
    if kind not in ("sqlite", "redis"):
        store.materialize(start_date=start, end_date=end, feature_views=[view.name])
        return
    stamps = frame[timestamp]
    latest = (
        frame.loc[(stamps >= start) & (stamps < end)]
        .sort_values(timestamp, kind="stable")
        .drop_duplicates(key, keep="last")
    )
    # in the order of the serialized keys, the stores' own: SQLite then appends to its
    # primary key's B-tree instead of writing all over a table larger than its page cache
    keys = _entity_keys(latest[key], key, PROTO_FIELDS[columns[key]], store.config)
    order = np.argsort(np.array(keys, dtype=object), kind="stable")
    latest, keys = latest.iloc[order], [keys[i] for i in order]
    write = _write_sqlite if kind == "sqlite" else _write_redis
    for begin in range(0, len(latest), BATCH_ROWS):
        batch = latest.iloc[begin : begin + BATCH_ROWS]
        write(
            store, view, _Encoded(batch, keys[begin : begin + BATCH_ROWS], columns, key, timestamp)
        )
    store.registry.apply_materialization(
        view, store.project, start.to_pydatetime(), end.to_pydatetime()
    )


def _entity_keys(values: pd.Series, key: str, field: str, config: Any) -> list[bytes]:
    """Each value's entity key as the online stores store it. Feast's serialization of a
    single-key entity is a prefix, then the value's bytes (an int64: its eight little-endian
    bytes); the prefix is taken from Feast's own serialization of the first key, and the whole
    of that key is checked against it, else every key is serialized by Feast (a quarter of a
    million a second)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    version = config.entity_key_serialization_version

    def by_feast(value: Any) -> bytes:
        entity = EntityKey(join_keys=[key], entity_values=[Value(**{field: value})])
        return bytes(serialize_entity_key(entity, version))

    plain = values.tolist()
    if field != "int64_val" or not plain:
        return [by_feast(v) for v in plain]
    raw = np.asarray(plain, dtype="<i8").tobytes()
    first = by_feast(plain[0])
    prefix = first[:-8]
    if first != prefix + raw[:8]:
        return [by_feast(v) for v in plain]
    return [prefix + raw[i : i + 8] for i in range(0, len(raw), 8)]


class _Encoded:
    """One batch as the online stores store it: serialized entity keys, event times and,
    per feature, each row's protobuf bytes and its text."""

    def __init__(
        self,
        batch: pd.DataFrame,
        keys: list[bytes],
        columns: dict[str, str],
        key: str,
        timestamp: str,
    ) -> None:
        self.keys = keys
        stamps = pd.to_datetime(batch[timestamp], utc=True)
        self.nanos: list[int] = stamps.astype("int64").tolist()  # since the epoch
        naive = stamps.dt.tz_convert(None).to_numpy().astype("datetime64[us]")
        self.naive_utc: list[Any] = naive.tolist()  # datetime objects
        self.values: dict[str, tuple[np.ndarray, np.ndarray]] = {
            name: _encoded_column(batch[name], PROTO_FIELDS[kind])
            for name, kind in columns.items()
            if name != key
        }


def _encoded_column(column: pd.Series, field: str) -> tuple[np.ndarray, np.ndarray]:
    """Each row's protobuf bytes (a null: an empty Value) and text (None for a null), each
    distinct value serialized once."""
    from feast.protos.feast.types.Value_pb2 import Value

    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    plain = [v.item() if hasattr(v, "item") else v for v in uniques.tolist()]
    if field == "int64_val":
        plain = [int(v) for v in plain]
    encoded = np.array([Value(**{field: v}).SerializeToString() for v in plain] + [b""], object)
    text = np.array([str(v) for v in plain] + [None], object)
    return encoded[codes], text[codes]  # code -1 (a null) takes the last entry


def _write_sqlite(store: Any, view: Any, batch: _Encoded) -> None:
    """Upsert the batch's (entity, feature) rows into the view's table, as Feast's SQLite store
    lays them out (value: Value bytes; value_text; event_ts; no created_ts)."""
    from feast.infra.online_stores.sqlite import _table_id

    config = store.config
    conn = store.provider.online_store._get_conn(config)
    table = _table_id(config.project, view, config.registry.enable_online_feature_view_versioning)
    # as Feast's datetime adapter writes them: whole seconds of the naive UTC time, which
    # Python's `timestamp()` reads as local time (Feast's converter reads them back the same way)
    times = [int(t.timestamp()) for t in batch.naive_utc]
    names = sorted(batch.values)
    rows = [
        (entity, name, value, text, when, None)
        for entity, when, *pairs in zip(
            batch.keys, times, *(zip(*batch.values[n], strict=True) for n in names), strict=True
        )
        for name, (value, text) in zip(names, pairs, strict=True)
    ]
    # a page cache that holds the batch's part of the table and its index (default: 2 MB)
    conn.execute("PRAGMA cache_size = -262144")
    with conn:
        conn.executemany(
            f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, '  # nosec B608 - Feast's own table name
            "created_ts) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(entity_key, feature_name) DO "
            "UPDATE SET value = excluded.value, value_text = excluded.value_text, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts",
            rows,
        )


def _write_redis(store: Any, view: Any, batch: _Encoded) -> None:
    """HSET each entity's features and event time, as Feast's Redis store lays them out,
    skipping an entity whose stored event time is as new or newer."""
    from feast.infra.online_stores.helpers import _mmh3
    from feast.infra.online_stores.redis import _versioned_fv_name
    from google.protobuf.timestamp_pb2 import Timestamp

    config = store.config
    options = config.online_store
    client = store.provider.online_store._get_client(options)
    name = _versioned_fv_name(view, config)
    ts_key = f"_ts:{name}"
    suffix = config.project.encode("utf-8")
    keys = [k + suffix for k in batch.keys]  # Feast's _redis_key: entity key, then project
    fields = {feature: _mmh3(f"{name}:{feature}") for feature in batch.values}
    with client.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.hget(k, ts_key)
        stored = pipe.execute()
    columns = [(fields[feature], values) for feature, (values, _) in batch.values.items()]
    with client.pipeline(transaction=False) as pipe:
        for i, (k, nanos, before) in enumerate(zip(keys, batch.nanos, stored, strict=True)):
            if before:
                previous = Timestamp()
                previous.ParseFromString(before)
                if nanos <= previous.seconds * 1_000_000_000 + previous.nanos:
                    continue
            stamp = Timestamp(seconds=nanos // 1_000_000_000, nanos=nanos % 1_000_000_000)
            pairs: list[Any] = [ts_key, stamp.SerializeToString()]
            for field, values in columns:
                pairs += (field, values[i])
            pipe.execute_command("HSET", k, *pairs)
            if options.key_ttl_seconds:
                pipe.expire(k, options.key_ttl_seconds)
        pipe.execute()

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
- SQLite: one upsert statement per entity (all its features), in the store's primary-key
  order; Redis: one HSET per entity, written in Redis's protocol and sent while the next
  batch is encoded (after one read of the stored event times: as Feast, a row no newer than
  the stored one is skipped).

Other online stores go through Feast's `materialize`. Either way the registry records the
materialized interval (`feast materialize-incremental` starts from it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import chain, repeat
from typing import Any

import numpy as np
import pandas as pd

# entities per batch: on SQLite a batch is a transaction (25,000 took a fifth longer than
# 100,000); on Redis a batch is sent while the next is encoded, which needs several of them
BATCH_ROWS = {"sqlite": 100_000, "redis": 25_000}
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
    size = BATCH_ROWS[kind]
    batches = (
        _Encoded(latest.iloc[b : b + size], keys[b : b + size], columns, key, timestamp)
        for b in range(0, len(latest), size)
    )
    if kind == "sqlite":
        for batch in batches:
            _write_sqlite(store, view, batch)
    else:
        _write_redis(store, view, batches)
    store.registry.apply_materialization(
        view, store.project, start.to_pydatetime(), end.to_pydatetime()
    )


def _entity_keys(values: pd.Series, key: str, field: str, config: Any) -> list[bytes]:
    """Each value's entity key as the online stores store it (Feast's serialization of a
    single-key entity: a prefix, then an int64's eight little-endian bytes)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    version = config.entity_key_serialization_version

    def by_feast(value: Any) -> bytes:
        entity = EntityKey(join_keys=[key], entity_values=[Value(**{field: value})])
        return bytes(serialize_entity_key(entity, version))

    plain = values.tolist()
    if field != "int64_val":
        return [by_feast(v) for v in plain]
    return _prefixed(plain, "<i8", by_feast)


def _prefixed(plain: list, dtype: str, by_feast: Callable[[Any], bytes]) -> list[bytes]:
    """Feast's bytes of each value where they are a fixed prefix, then the value's eight bytes
    as `dtype` (an int64 entity key, a double Value): the prefix is taken from Feast's bytes
    of the first value, and the whole of those is checked against it, else Feast makes every
    value's bytes (a quarter of a million a second)."""
    if not plain:
        return []
    raw = np.asarray(plain, dtype=dtype).tobytes()
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
        self.values: dict[str, _Column] = {
            name: _Column(batch[name], PROTO_FIELDS[kind])
            for name, kind in columns.items()
            if name != key
        }


class _Column:
    """One feature's rows as codes into its distinct values, each value serialized once: its
    protobuf bytes (a null: an empty Value) and, for SQLite's `value_text`, its text (None
    for a null)."""

    def __init__(self, column: pd.Series, field: str) -> None:
        codes, uniques = pd.factorize(column, use_na_sentinel=True)
        self.codes = codes  # -1 (a null) takes the last entry
        self.plain = [v.item() if hasattr(v, "item") else v for v in uniques.tolist()]
        if field == "int64_val":
            self.plain = [int(v) for v in self.plain]
        self.encoded = _values(self.plain, field) + [b""]

    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Each row's protobuf bytes and text."""
        text = np.array([str(v) for v in self.plain] + [None], object)
        return np.array(self.encoded, object)[self.codes], text[self.codes]


def _values(plain: list, field: str) -> list[bytes]:
    """Each value's protobuf bytes (a double: a fixed tag, then its eight little-endian bytes;
    the float features of a large window are nearly all distinct)."""
    from feast.protos.feast.types.Value_pb2 import Value

    def by_feast(value: Any) -> bytes:
        return Value(**{field: value}).SerializeToString()

    if field != "double_val":
        return [by_feast(v) for v in plain]
    return _prefixed(plain, "<f8", by_feast)


def _write_sqlite(store: Any, view: Any, batch: _Encoded) -> None:
    """Upsert the batch's (entity, feature) rows into the view's table, as Feast's SQLite store
    lays them out (value: Value bytes; value_text; event_ts; no created_ts).

    One statement per entity writes its row of every feature: the entity's key and time are
    bound once, not once per feature (SQLite's binding of parameters, not its B-tree, was most
    of the time of one statement per (entity, feature) row)."""
    from feast.infra.online_stores.sqlite import _table_id

    config = store.config
    conn = store.provider.online_store._get_conn(config)
    table = _table_id(config.project, view, config.registry.enable_online_feature_view_versioning)
    # as Feast's datetime adapter writes them: whole seconds of the naive UTC time, which
    # Python's `timestamp()` reads as local time (Feast's converter reads them back the same way)
    times = [int(t.timestamp()) for t in batch.naive_utc]
    names = sorted(batch.values)  # the primary key's order within an entity
    quoted = [name.replace("'", "''") for name in names]
    rows = ", ".join(
        f"(?1, '{name}', ?{3 + 2 * i}, ?{4 + 2 * i}, ?2, NULL)" for i, name in enumerate(quoted)
    )
    columns = [column for name in names for column in batch.values[name].rows()]
    # a page cache that holds the batch's part of the table and its index (default: 2 MB)
    conn.execute("PRAGMA cache_size = -262144")
    with conn:
        conn.executemany(
            f'INSERT INTO "{table}" (entity_key, feature_name, value, value_text, event_ts, '  # nosec B608 - Feast's own table name and the view's feature names
            f"created_ts) VALUES {rows} ON CONFLICT(entity_key, feature_name) DO "
            "UPDATE SET value = excluded.value, value_text = excluded.value_text, "
            "event_ts = excluded.event_ts, created_ts = excluded.created_ts",
            zip(batch.keys, times, *columns, strict=True),
        )


def _write_redis(store: Any, view: Any, batches: Iterator[_Encoded]) -> None:
    """HSET each entity's features and event time, as Feast's Redis store lays them out,
    skipping an entity whose stored event time is as new or newer.

    The commands are written in Redis's wire protocol by joining pre-encoded pieces (each
    distinct value encoded once): redis-py's packing of each command, not Redis, was most of
    the time of a pipeline. A batch's HSETs are sent from a thread while the next batch is
    encoded, Redis working on one core and the encoding on another; one batch at most is in
    flight (the batches' keys are distinct, so their order does not matter)."""
    from concurrent.futures import Future, ThreadPoolExecutor

    from feast.infra.online_stores.redis import _versioned_fv_name

    config = store.config
    client = store.provider.online_store._get_client(config.online_store)
    name = _versioned_fv_name(view, config)
    sending: Future | None = None
    with ThreadPoolExecutor(1, thread_name_prefix="maestro-materialize") as sender:
        for batch in batches:
            payload, replies = _hsets(client, config, name, batch)
            if sending is not None:
                sending.result()  # its error, if any, is raised here
            sending = sender.submit(_send, client, payload, replies) if replies else None
        if sending is not None:
            sending.result()


def _hsets(client: Any, config: Any, name: str, batch: _Encoded) -> tuple[bytes, int]:
    """The batch's commands (HSET, and EXPIRE where keys expire) for the entities newer than
    what Redis holds, and how many replies they get."""
    from feast.infra.online_stores.helpers import _mmh3

    options = config.online_store
    ts_key = _bulk(f"_ts:{name}".encode())
    suffix = config.project.encode("utf-8")
    keys = [_bulk(k + suffix) for k in batch.keys]  # Feast's _redis_key: entity key, then project
    newer = _newer_than_stored(client, keys, ts_key, batch.nanos)
    keys = [k for k, keep in zip(keys, newer, strict=True) if keep]
    count = len(keys)
    stamps = _timestamps(np.asarray(batch.nanos, dtype=np.int64)[newer])
    pieces: list[Any] = [
        repeat(b"*%d\r\n$4\r\nHSET\r\n" % (4 + 2 * len(batch.values)), count),
        keys,
        repeat(ts_key, count),
        stamps,
    ]
    for feature, column in batch.values.items():
        values = _bulks(column.encoded, column.codes[newer])
        pieces += [repeat(_bulk(_mmh3(f"{name}:{feature}")), count), values]
    replies = count
    if options.key_ttl_seconds:
        pieces += [repeat(b"*3\r\n$6\r\nEXPIRE\r\n", count), keys]
        pieces.append(repeat(_bulk(str(options.key_ttl_seconds).encode()), count))
        replies *= 2
    return b"".join(chain.from_iterable(zip(*pieces, strict=True))), replies


def _newer_than_stored(client: Any, keys: list[bytes], ts_key: bytes, nanos: list[int]) -> Any:
    """For each (encoded) key, whether its row is newer than the event time Redis holds."""
    from google.protobuf.timestamp_pb2 import Timestamp

    command = b"*3\r\n$4\r\nHGET\r\n"
    stored = _send(client, b"".join(command + k + ts_key for k in keys), len(keys))
    newer = np.ones(len(keys), dtype=bool)
    previous = Timestamp()
    for i, before in enumerate(stored):
        if before:
            previous.ParseFromString(before)
            newer[i] = nanos[i] > previous.seconds * 1_000_000_000 + previous.nanos
    return newer


def _send(client: Any, payload: bytes, replies: int) -> list[Any]:
    """Send encoded commands on one connection and read their replies; the first error is
    raised (after the connection is dropped: its other replies are unread)."""
    connection = client.connection_pool.get_connection()
    try:
        connection.send_packed_command([payload])
        return [connection.read_response() for _ in range(replies)]
    except BaseException:
        connection.disconnect()
        raise
    finally:
        client.connection_pool.release(connection)


def _timestamps(nanos: np.ndarray) -> list[bytes]:
    """Each time (nanoseconds since the epoch) as the bulk string of its protobuf Timestamp,
    each distinct time encoded once."""
    from google.protobuf.timestamp_pb2 import Timestamp

    codes, uniques = pd.factorize(nanos)
    encoded = [
        Timestamp(seconds=n // 1_000_000_000, nanos=n % 1_000_000_000).SerializeToString()
        for n in uniques.tolist()
    ]
    return _bulks(encoded, codes)


def _bulks(distinct: list[bytes], codes: np.ndarray) -> Any:
    """Each row's value (`distinct[code]`) as a Redis bulk string, each encoded once."""
    return np.array([_bulk(v) for v in distinct], dtype=object)[codes]


def _bulk(value: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(value), value)

"""Batched materialization writes what Feast's own materialize writes, read back by Feast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from maestro.data import features, online_write, synthetic
from maestro.spec import get_spec
from tests.support import redis_databases


def online_rows(store, view, keys: list[int]) -> list[tuple]:
    """Every key's event time and feature values, through Feast's own online read."""
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    names = [f.name for f in view.features]
    entity_keys = [
        EntityKey(join_keys=["customer_id"], entity_values=[Value(int64_val=k)]) for k in keys
    ]
    read = store.provider.online_read(store.config, view, entity_keys, list(names))
    return [
        (when, {n: (values or {}).get(n, Value()).SerializeToString() for n in names})
        for when, values in read
    ]


def history() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Two windows of the demo's customers: the second has a later observation of customer 1,
    an earlier one of customer 2 (each with other values) and a row with nulls."""
    first = synthetic.generate(400, seed=3)
    first.loc[5, "income"] = np.nan
    first.loc[6, "region"] = None
    later = first.iloc[[0, 1]].copy()
    later["event_timestamp"] = [
        later.event_timestamp.iloc[0] + pd.Timedelta(days=30),
        later.event_timestamp.iloc[1] - pd.Timedelta(days=1),
    ]
    later["income"] = [1.0, 2.0]
    later["plan"] = ["premium", "basic"]
    return first, later


def window(frame: pd.DataFrame) -> tuple[pd.Timestamp, pd.Timestamp]:
    return frame.event_timestamp.min(), frame.event_timestamp.max() + pd.Timedelta(seconds=1)


def written(settings, batched: bool) -> tuple[list[tuple], list]:
    """What the online store holds after both windows, written by Feast or in batches."""
    spec = get_spec("demo", settings)
    store = features.feature_store(settings)
    assert store.config.online_store.type == ("redis" if settings.feast_online_store else "sqlite")
    store.apply(features.load_definitions(spec, settings))
    view = store.get_feature_view(spec.feature_view)
    columns = {"customer_id": "int"} | {f.name: f.type for f in spec.features}
    for frame in history():
        start, end = window(frame)
        if batched:
            online_write.materialize(
                store, view, frame, columns, "customer_id", "event_timestamp", start, end
            )
        else:
            features.publish_snapshot(frame.assign(churned=0), spec, settings)
            store.materialize(start_date=start, end_date=end, feature_views=[view.name])
    keys = [int(k) for k in history()[0].customer_id] + [10_000]  # and one it never saw
    view = store.get_feature_view(spec.feature_view)
    return online_rows(store, view, keys), view.materialization_intervals


@pytest.mark.slow
@pytest.mark.parametrize("online", ["sqlite", "redis"])
def test_batched_writes_match_feasts_materialize(online, small_specs, monkeypatch, tmp_path):
    from maestro.config import get_settings

    def fresh(name: str, redis_url: str | None):
        monkeypatch.setenv("MAESTRO_HOME", str(tmp_path / name))
        if redis_url:
            monkeypatch.setenv("MAESTRO_FEAST_ONLINE_STORE", redis_url)
        get_settings.cache_clear()
        return get_settings()

    # batches of 64 entities: the 400 customers take seven, several of them in flight on Redis
    monkeypatch.setitem(online_write.BATCH_ROWS, online, 64)
    with redis_databases(2 if online == "redis" else 0) as urls:
        urls = urls or [None, None]
        assert len(urls) == 2
        by_feast, feast_intervals = written(fresh("feast", urls[0]), batched=False)
        batched, intervals = written(fresh("batched", urls[1]), batched=True)
    assert batched == by_feast
    assert intervals == feast_intervals and len(intervals) == 2
    # the stores' own semantics, kept: a later row replaces; Redis keeps the newer of two rows,
    # SQLite the last written; a null is a null; an unknown key has nothing
    assert batched[0][1]["plan"] == by_feast[0][1]["plan"] != b""
    assert batched[-1] == by_feast[-1]


@pytest.mark.slow
def test_batched_redis_writes_expire_keys_as_configured(small_specs, monkeypatch, tmp_path):
    import redis

    from maestro.config import get_settings

    with redis_databases(1) as (url,):
        monkeypatch.setenv("MAESTRO_HOME", str(tmp_path))
        monkeypatch.setenv("MAESTRO_FEAST_ONLINE_STORE", url)
        get_settings.cache_clear()
        settings = get_settings()
        spec = get_spec("demo", settings)
        store = features.feature_store(settings)
        store.config.online_store.key_ttl_seconds = 3600  # feature_store.yaml's key_ttl_seconds
        store.apply(features.load_definitions(spec, settings))
        view = store.get_feature_view(spec.feature_view)
        frame = history()[0]
        columns = {"customer_id": "int"} | {f.name: f.type for f in spec.features}
        online_write.materialize(
            store, view, frame, columns, "customer_id", "event_timestamp", *window(frame)
        )
        client = redis.Redis.from_url(url)
        ttls = {client.ttl(key) for key in client.scan_iter(count=1000)}
        assert len(online_rows(store, view, [int(frame.customer_id.iloc[0])])[0][1]) == 9
    assert ttls and all(0 < ttl <= 3600 for ttl in ttls)

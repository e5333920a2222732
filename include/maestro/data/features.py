"""Features through Feast: definitions generated from the spec, apply, materialize, and
point-in-time correct training sets.

`feature_repo/<model>.py` is rendered from the spec by `render_definitions` and committed,
following Feast's repository template (Entity -> Source -> FeatureView -> FeatureService);
`check_definitions` fails when a file and its spec disagree. The offline source of a model
is one parquet file in the state folder, rewritten from the run's snapshot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from maestro.config import Settings
from maestro.files import atomic_write, atomic_write_text, import_file
from maestro.spec import ModelSpec

FEAST_TYPES = {"int": "Int64", "float": "Float64", "category": "String"}

TEMPLATE = '''"""Feast definitions for the `{name}` model. Generated from its spec ({name}.yaml) by
`maestro features generate`: edit the spec, not this file."""

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import {types}

# Entity: one {key} per row of the model's data.
{name}_entity = Entity(
    name={entity_name}, join_keys=[{key_literal}], value_type=ValueType.{key_type}, description={description}
)

# Source: the latest snapshot of the model's data, written by the training DAG.
{name}_source = FileSource(
    name={source_name},
    path=os.path.join(os.environ.get("MAESTRO_FEAST_DATA", "data"), {source_file}),
    timestamp_field={timestamp_literal},
)

# Feature view: the spec's features, point-in-time joined on {key} and {timestamp}.
{name}_fv = FeatureView(
    name={view},
    entities=[{name}_entity],
    ttl=timedelta(days=3650),
    schema=[
{fields}
    ],
    online=True,
    source={name}_source,
    tags={{"model": {name_literal}, "owner": {owner}}},
)

# Feature service: what training of `{name}` fetches, point in time (the model server
# reads it from the online store for requests that carry only the entity key).
{name}_service = FeatureService(name={service}, features=[{name}_fv])
'''


def python_literal(text: str) -> str:
    """`text` as a Python string literal: a JSON string is one (same quotes, same escapes),
    so nothing in a spec's text can end the string and become code."""
    return json.dumps(text)


def render_definitions(spec: ModelSpec) -> str:
    """The Feast definitions file for a spec, as committed in `feature_repo/`. The names that
    become identifiers or comments (the model's, the key's, the timestamp's) are identifiers
    by the spec's own validation; every other text is a literal."""
    fields = "\n".join(
        f"        Field(name={python_literal(f.name)}, dtype={FEAST_TYPES[f.type]}),"
        for f in spec.features
    )
    key, name = spec.entity.key, spec.name
    return TEMPLATE.format(
        name=name,
        name_literal=python_literal(name),
        key=key,
        key_literal=python_literal(key),
        entity_name=python_literal(f"{name}_{key}"),
        description=python_literal(f"{key} of {name}"),
        key_type="INT64" if spec.entity.type == "int" else "STRING",
        source_name=python_literal(f"{name}_source"),
        source_file=python_literal(f"{name}.parquet"),
        timestamp=spec.timestamp.column,
        timestamp_literal=python_literal(spec.timestamp.column),
        view=python_literal(spec.feature_view),
        service=python_literal(spec.feature_service),
        owner=python_literal(spec.owner),
        fields=fields,
        types=", ".join(sorted({FEAST_TYPES[f.type] for f in spec.features})),
    )


def definitions_path(spec: ModelSpec, settings: Settings) -> Path:
    return settings.feature_repo / f"{spec.name}.py"


def write_definitions(spec: ModelSpec, settings: Settings) -> Path:
    path = definitions_path(spec, settings)
    atomic_write_text(path, render_definitions(spec))
    return path


def check_definitions(spec: ModelSpec, settings: Settings) -> None:
    """Raise when `feature_repo/<model>.py` is missing or differs from what the spec renders."""
    path = definitions_path(spec, settings)
    if not path.exists() or path.read_text() != render_definitions(spec):
        raise ValueError(
            f"{path}: Feast definitions do not match {settings.specs_dir / spec.name}.yaml; "
            f"run `maestro features generate {spec.name}`"
        )


def offline_source_path(spec: ModelSpec, settings: Settings) -> Path:
    return settings.feast_dir / "data" / f"{spec.name}.parquet"


def feature_store(settings: Settings) -> Any:
    """The Feast store of `feature_repo/`, on this settings' state folder, registry and online
    store."""
    from feast import FeatureStore
    from feast.repo_config import load_repo_config

    os.environ["MAESTRO_HOME"] = str(settings.home)
    os.environ["MAESTRO_FEAST_DATA"] = str(settings.feast_dir / "data")
    (settings.feast_dir / "data").mkdir(parents=True, exist_ok=True)
    config = load_repo_config(settings.feature_repo, settings.feature_repo / "feature_store.yaml")
    if settings.feast_registry and "://" in settings.feast_registry:  # shared: SQL registry
        from feast.infra.registry.sql import SqlRegistryConfig

        url = settings.feast_registry.replace("postgresql://", "postgresql+psycopg://", 1)
        config.registry_config = SqlRegistryConfig(path=url)
    elif settings.feast_registry:
        from feast.repo_config import RegistryConfig

        config.registry_config = RegistryConfig(registry_type="file", path=settings.feast_registry)
    if settings.feast_online_store:
        from feast.infra.online_stores.redis import RedisOnlineStoreConfig

        connection = redis_connection_string(settings.feast_online_store)
        config.online_config = RedisOnlineStoreConfig(connection_string=connection)
    return FeatureStore(config=config)


def redis_connection_string(url: str) -> str:
    """Feast's Redis connection string (`host:port,db=N,password=...`) for a `redis://` URL."""
    from urllib.parse import urlsplit

    from maestro.errors import BadInput

    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise BadInput(f"MAESTRO_FEAST_ONLINE_STORE: {url!r} is not a redis://host:port[/db] URL")
    connection = f"{parts.hostname}:{parts.port or 6379}"
    if parts.path.strip("/"):
        connection += f",db={int(parts.path.strip('/'))}"
    if parts.password:
        connection += f",password={parts.password}"
    if parts.scheme == "rediss":
        connection += ",ssl=true"
    return connection


def load_definitions(spec: ModelSpec, settings: Settings) -> list:
    """The Feast objects declared in the model's definitions file."""
    from feast import Entity, FeatureService, FeatureView, FileSource

    check_definitions(spec, settings)
    path = definitions_path(spec, settings)
    module = import_file(f"feature_repo_{spec.name}", path)
    kinds = (Entity, FileSource, FeatureView, FeatureService)
    return [v for v in vars(module).values() if isinstance(v, kinds)]


def publish_snapshot(snapshot: pd.DataFrame, spec: ModelSpec, settings: Settings) -> Path:
    """Make the run's snapshot the model's offline source (atomic replace)."""
    path = offline_source_path(spec, settings)
    offline = snapshot.drop(columns=[spec.target.name])
    atomic_write(path, lambda tmp: offline.to_parquet(tmp, index=False))
    return path


def apply_and_materialize(
    snapshot: pd.DataFrame,
    spec: ModelSpec,
    settings: Settings,
    start: pd.Timestamp,
    end: pd.Timestamp,
) -> dict:
    """`feast apply` of the model's definitions, then materialize [start, end) online (in
    batches: `maestro.data.online_write`)."""
    from maestro.data import online_write

    publish_snapshot(snapshot, spec, settings)
    store = feature_store(settings)
    store.apply(load_definitions(spec, settings))
    columns = {spec.entity.key: spec.entity.type} | {f.name: f.type for f in spec.features}
    view = store.get_feature_view(spec.feature_view)
    key, ts = spec.entity.key, spec.timestamp.column
    online_write.materialize(store, view, snapshot, columns, key, ts, start, end)
    return {
        "feature_service": spec.feature_service,
        "feature_views": [spec.feature_view],
        "materialized_start": start.isoformat(),
        "materialized_end": end.isoformat(),
    }


def historical_features(
    snapshot: pd.DataFrame, spec: ModelSpec, settings: Settings
) -> pd.DataFrame:
    """Point-in-time correct features for the snapshot's entities, labels and timestamps."""
    store = feature_store(settings)
    key, ts, target = spec.entity.key, spec.timestamp.column, spec.target.name
    entity_df = snapshot[[key, ts, target]]
    service = store.get_feature_service(spec.feature_service)
    frame = store.get_historical_features(entity_df=entity_df, features=service).to_df()
    frame = frame.sort_values([ts, key], kind="stable").reset_index(drop=True)
    return frame[[key, ts, *spec.feature_names, target]]


class OnlineFeatures:
    """A model's feature service read from Feast's online store, for requests that carry only
    the entity key.

    It reads through the store's provider (`online_read`, one round trip per feature view)
    rather than `get_online_features`, whose per-call resolution of the service, the entity
    types and the response costs several times the read at serving rates. Features written
    longer ago than their view's TTL are refused, not served: a model scored on features that
    old answers wrongly and quietly (Feast's online read returns them with their event time and
    leaves the judgement to the caller).
    """

    def __init__(self, spec: ModelSpec, settings: Settings) -> None:
        store = feature_store(settings)
        self.spec, self.config, self.provider = spec, store.config, store.provider
        service = store.get_feature_service(spec.feature_service)
        self.views = [
            (store.get_feature_view(p.name), [f.name for f in p.features])
            for p in service.feature_view_projections
        ]

    def rows(self, keys: list) -> list[dict]:
        """The features of each key, as records (without the key) in the keys' order;
        `LookupError` naming the first key the store does not know, `TimeoutError` the first
        whose features are older than their view's TTL."""
        import datetime as dt

        from feast.protos.feast.types.EntityKey_pb2 import EntityKey
        from feast.protos.feast.types.Value_pb2 import Value

        key = self.spec.entity.key
        kind = "int64_val" if self.spec.entity.type == "int" else "string_val"
        entity_keys = [EntityKey(join_keys=[key], entity_values=[Value(**{kind: k})]) for k in keys]
        rows: list[dict] = [{} for _ in keys]
        now = dt.datetime.now(dt.UTC)
        for view, names in self.views:
            # a copy: Feast's Redis store appends its timestamp key to the list it is given
            read = self.provider.online_read(self.config, view, entity_keys, list(names))
            for k, row, (written, values) in zip(keys, rows, read, strict=True):
                found = {name: _python_value((values or {}).get(name, Value())) for name in names}
                # an unknown key has no value at all (Redis answers with empty values)
                if all(value is None for value in found.values()):
                    raise LookupError(
                        f"unknown {key} {k!r}: the online store has no features of it"
                    )
                if view.ttl and written is not None and written < now - view.ttl:
                    raise TimeoutError(
                        f"{key} {k!r}: its features are older than {view.name}'s TTL "
                        f"({view.ttl.total_seconds() / 86400:g} days); materialize them again"
                    )
                row.update(found)
        return rows


def _python_value(value: Any) -> Any:
    """A Feast protobuf value as the plain Python value a JSON request would carry."""
    kind = value.WhichOneof("val")
    return None if kind in (None, "null_val") else getattr(value, kind)

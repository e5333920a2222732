"""Feast definitions for the `demo` model. Generated from its spec (demo.yaml) by
`maestro features generate`: edit the spec, not this file."""

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

# Entity: one customer_id per row of the model's data.
demo_entity = Entity(
    name="demo_customer_id", join_keys=["customer_id"], value_type=ValueType.INT64, description="customer_id of demo"
)

# Source: the latest snapshot of the model's data, written by the training DAG.
demo_source = FileSource(
    name="demo_source",
    path=os.path.join(os.environ.get("MAESTRO_FEAST_DATA", "data"), "demo.parquet"),
    timestamp_field="event_timestamp",
)

# Feature view: the spec's features, point-in-time joined on customer_id and event_timestamp.
demo_fv = FeatureView(
    name="demo_features",
    entities=[demo_entity],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="age", dtype=Int64),
        Field(name="income", dtype=Float64),
        Field(name="tenure_months", dtype=Int64),
        Field(name="num_products", dtype=Int64),
        Field(name="balance", dtype=Float64),
        Field(name="support_calls", dtype=Int64),
        Field(name="region", dtype=String),
        Field(name="plan", dtype=String),
        Field(name="group", dtype=String),
    ],
    online=True,
    source=demo_source,
    tags={"model": "demo", "owner": "ml-platform"},
)

# Feature service: what training of `demo` fetches, point in time (the model server
# reads it from the online store for requests that carry only the entity key).
demo_service = FeatureService(name="demo_v1", features=[demo_fv])

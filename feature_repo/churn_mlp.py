"""Feast definitions for the `churn_mlp` model. Generated from its spec (churn_mlp.yaml) by
`maestro features generate`: edit the spec, not this file."""

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, String

# Entity: one customer_id per row of the model's data.
churn_mlp_entity = Entity(
    name="churn_mlp_customer_id", join_keys=["customer_id"], value_type=ValueType.INT64, description="customer_id of churn_mlp"
)

# Source: the latest snapshot of the model's data, written by the training DAG.
churn_mlp_source = FileSource(
    name="churn_mlp_source",
    path=os.path.join(os.environ.get("MAESTRO_FEAST_DATA", "data"), "churn_mlp.parquet"),
    timestamp_field="event_timestamp",
)

# Feature view: the spec's features, point-in-time joined on customer_id and event_timestamp.
churn_mlp_fv = FeatureView(
    name="churn_mlp_features",
    entities=[churn_mlp_entity],
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
    source=churn_mlp_source,
    tags={"model": "churn_mlp", "owner": "ml-platform"},
)

# Feature service: what training of `churn_mlp` fetches, point in time (the model server
# reads it from the online store for requests that carry only the entity key).
churn_mlp_service = FeatureService(name="churn_mlp_v1", features=[churn_mlp_fv])

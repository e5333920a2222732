"""Feast definitions for the `adult_income` model. Generated from its spec (adult_income.yaml) by
`maestro features generate`: edit the spec, not this file."""

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Int64, String

# Entity: one person_id per row of the model's data.
adult_income_entity = Entity(
    name="adult_income_person_id", join_keys=["person_id"], value_type=ValueType.INT64, description="person_id of adult_income"
)

# Source: the latest snapshot of the model's data, written by the training DAG.
adult_income_source = FileSource(
    name="adult_income_source",
    path=os.path.join(os.environ.get("MAESTRO_FEAST_DATA", "data"), "adult_income.parquet"),
    timestamp_field="event_timestamp",
)

# Feature view: the spec's features, point-in-time joined on person_id and event_timestamp.
adult_income_fv = FeatureView(
    name="adult_income_features",
    entities=[adult_income_entity],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="age", dtype=Int64),
        Field(name="workclass", dtype=String),
        Field(name="fnlwgt", dtype=Int64),
        Field(name="education", dtype=String),
        Field(name="education_num", dtype=Int64),
        Field(name="marital_status", dtype=String),
        Field(name="occupation", dtype=String),
        Field(name="relationship", dtype=String),
        Field(name="race", dtype=String),
        Field(name="sex", dtype=String),
        Field(name="capital_gain", dtype=Int64),
        Field(name="capital_loss", dtype=Int64),
        Field(name="hours_per_week", dtype=Int64),
        Field(name="native_country", dtype=String),
    ],
    online=True,
    source=adult_income_source,
    tags={"model": "adult_income", "owner": "ml-platform"},
)

# Feature service: what training of `adult_income` fetches, point in time (the model server
# reads it from the online store for requests that carry only the entity key).
adult_income_service = FeatureService(name="adult_income_v1", features=[adult_income_fv])

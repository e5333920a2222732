"""Feast definitions for the `bike_demand` model. Generated from its spec (bike_demand.yaml) by
`maestro features generate`: edit the spec, not this file."""

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

# Entity: one instant per row of the model's data.
bike_demand_entity = Entity(
    name="bike_demand_instant", join_keys=["instant"], value_type=ValueType.INT64, description="instant of bike_demand"
)

# Source: the latest snapshot of the model's data, written by the training DAG.
bike_demand_source = FileSource(
    name="bike_demand_source",
    path=os.path.join(os.environ.get("MAESTRO_FEAST_DATA", "data"), "bike_demand.parquet"),
    timestamp_field="event_timestamp",
)

# Feature view: the spec's features, point-in-time joined on instant and event_timestamp.
bike_demand_fv = FeatureView(
    name="bike_demand_features",
    entities=[bike_demand_entity],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="season", dtype=Int64),
        Field(name="yr", dtype=Int64),
        Field(name="mnth", dtype=Int64),
        Field(name="hr", dtype=Int64),
        Field(name="holiday", dtype=Int64),
        Field(name="weekday", dtype=Int64),
        Field(name="workingday", dtype=Int64),
        Field(name="weathersit", dtype=Int64),
        Field(name="temp", dtype=Float64),
        Field(name="atemp", dtype=Float64),
        Field(name="hum", dtype=Float64),
        Field(name="windspeed", dtype=Float64),
    ],
    online=True,
    source=bike_demand_source,
    tags={"model": "bike_demand", "owner": "ml-platform"},
)

# Feature service: what training of `bike_demand` fetches, point in time (the model server
# reads it from the online store for requests that carry only the entity key).
bike_demand_service = FeatureService(name="bike_demand_v1", features=[bike_demand_fv])

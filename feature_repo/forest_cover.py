"""Feast definitions for the `forest_cover` model. Generated from its spec (forest_cover.yaml) by
`maestro features generate`: edit the spec, not this file."""

import os
from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Int64

# Entity: one cell_id per row of the model's data.
forest_cover_entity = Entity(
    name="forest_cover_cell_id", join_keys=["cell_id"], value_type=ValueType.INT64, description="cell_id of forest_cover"
)

# Source: the latest snapshot of the model's data, written by the training DAG.
forest_cover_source = FileSource(
    name="forest_cover_source",
    path=os.path.join(os.environ.get("MAESTRO_FEAST_DATA", "data"), "forest_cover.parquet"),
    timestamp_field="event_timestamp",
)

# Feature view: the spec's features, point-in-time joined on cell_id and event_timestamp.
forest_cover_fv = FeatureView(
    name="forest_cover_features",
    entities=[forest_cover_entity],
    ttl=timedelta(days=3650),
    schema=[
        Field(name="elevation", dtype=Int64),
        Field(name="aspect", dtype=Int64),
        Field(name="slope", dtype=Int64),
        Field(name="horizontal_distance_to_hydrology", dtype=Int64),
        Field(name="vertical_distance_to_hydrology", dtype=Int64),
        Field(name="horizontal_distance_to_roadways", dtype=Int64),
        Field(name="hillshade_9am", dtype=Int64),
        Field(name="hillshade_noon", dtype=Int64),
        Field(name="hillshade_3pm", dtype=Int64),
        Field(name="horizontal_distance_to_fire_points", dtype=Int64),
        Field(name="wilderness_area1", dtype=Int64),
        Field(name="wilderness_area2", dtype=Int64),
        Field(name="wilderness_area3", dtype=Int64),
        Field(name="wilderness_area4", dtype=Int64),
        Field(name="soil_type1", dtype=Int64),
        Field(name="soil_type2", dtype=Int64),
        Field(name="soil_type3", dtype=Int64),
        Field(name="soil_type4", dtype=Int64),
        Field(name="soil_type5", dtype=Int64),
        Field(name="soil_type6", dtype=Int64),
        Field(name="soil_type7", dtype=Int64),
        Field(name="soil_type8", dtype=Int64),
        Field(name="soil_type9", dtype=Int64),
        Field(name="soil_type10", dtype=Int64),
        Field(name="soil_type11", dtype=Int64),
        Field(name="soil_type12", dtype=Int64),
        Field(name="soil_type13", dtype=Int64),
        Field(name="soil_type14", dtype=Int64),
        Field(name="soil_type15", dtype=Int64),
        Field(name="soil_type16", dtype=Int64),
        Field(name="soil_type17", dtype=Int64),
        Field(name="soil_type18", dtype=Int64),
        Field(name="soil_type19", dtype=Int64),
        Field(name="soil_type20", dtype=Int64),
        Field(name="soil_type21", dtype=Int64),
        Field(name="soil_type22", dtype=Int64),
        Field(name="soil_type23", dtype=Int64),
        Field(name="soil_type24", dtype=Int64),
        Field(name="soil_type25", dtype=Int64),
        Field(name="soil_type26", dtype=Int64),
        Field(name="soil_type27", dtype=Int64),
        Field(name="soil_type28", dtype=Int64),
        Field(name="soil_type29", dtype=Int64),
        Field(name="soil_type30", dtype=Int64),
        Field(name="soil_type31", dtype=Int64),
        Field(name="soil_type32", dtype=Int64),
        Field(name="soil_type33", dtype=Int64),
        Field(name="soil_type34", dtype=Int64),
        Field(name="soil_type35", dtype=Int64),
        Field(name="soil_type36", dtype=Int64),
        Field(name="soil_type37", dtype=Int64),
        Field(name="soil_type38", dtype=Int64),
        Field(name="soil_type39", dtype=Int64),
        Field(name="soil_type40", dtype=Int64),
    ],
    online=True,
    source=forest_cover_source,
    tags={"model": "forest_cover", "owner": "ml-platform"},
)

# Feature service: what training of `forest_cover` fetches, point in time (the model server
# reads it from the online store for requests that carry only the entity key).
forest_cover_service = FeatureService(name="forest_cover_v1", features=[forest_cover_fv])

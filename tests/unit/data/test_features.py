"""Feast: committed definitions match the specs; training sets are point-in-time correct."""

from __future__ import annotations

import pandas as pd
import pytest

from maestro.data import features, sources
from maestro.spec import get_spec, load_spec, spec_paths


def test_committed_definitions_match_specs(settings):
    for path in spec_paths(settings):
        features.check_definitions(load_spec(path), settings)


def test_a_spec_change_is_caught(use_specs):
    settings = use_specs({})
    spec_file = settings.specs_dir / "demo.yaml"
    spec_file.write_text(spec_file.read_text().replace("name: income", "name: yearly_income"))
    with pytest.raises(ValueError, match="run `maestro features generate demo`") as error:
        features.check_definitions(get_spec("demo", settings), settings)
    assert f"do not match {spec_file}" in str(error.value)  # the spec read, wherever it is


@pytest.mark.slow
def test_definitions_follow_feast_conventions(settings):
    objects = features.load_definitions(get_spec("demo", settings), settings)
    kinds = sorted(type(o).__name__ for o in objects)
    assert kinds == ["Entity", "FeatureService", "FeatureView", "FileSource"]
    view = next(o for o in objects if type(o).__name__ == "FeatureView")
    assert sorted(f.name for f in view.schema) == sorted(get_spec("demo", settings).feature_names)


@pytest.mark.slow
def test_point_in_time_join_never_sees_the_future(small_specs):
    spec = get_spec("demo", small_specs)
    snapshot = sources.load_snapshot(sources.ingest(spec, small_specs, None).to_dict(), small_specs)
    # A second observation of customer 1, later in time, with different values.
    later = snapshot.iloc[[0]].copy()
    later["event_timestamp"] += pd.Timedelta(days=30)
    later["income"] = 999_999.0
    history = pd.concat([snapshot, later], ignore_index=True)
    start, end = (
        history.event_timestamp.min(),
        history.event_timestamp.max() + pd.Timedelta(seconds=1),
    )
    features.apply_and_materialize(history, spec, small_specs, start, end)
    asked = snapshot.iloc[[0]].assign(
        event_timestamp=snapshot.event_timestamp.iloc[0] + pd.Timedelta(days=1)
    )
    got = features.historical_features(asked, spec, small_specs)
    assert got["income"].iloc[0] == snapshot["income"].iloc[0]
    online = features.OnlineFeatures(spec, small_specs).rows([int(snapshot.customer_id.iloc[0])])
    assert online[0]["income"] == 999_999.0

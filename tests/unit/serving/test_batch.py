"""Batch scoring with the champion of a real registry: one day of the source, scored exactly
as the pipeline scores it, the version on every row, a re-run replacing its partition."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from maestro.errors import BadInput
from maestro.serving.batch import read_partition, score_partition


def test_a_day_is_scored_by_the_champion_and_a_rerun_replaces_it(settings, demo_champion):
    pipeline, _ = demo_champion
    day = "2025-07-02"
    done = score_partition(settings, "demo", day)
    written = pd.read_parquet(done["output"])
    that_day = read_partition(settings, "demo", day, None)
    assert done["rows"] == len(that_day) == len(written) > 0
    assert set(written["event_timestamp"].dt.strftime("%Y-%m-%d")) == {day}
    assert set(written["model_version"]) == {"1"} and done["model_version"] == "1"
    assert list(written.columns) == [
        "customer_id",
        "event_timestamp",
        "prediction",
        "model_version",
        "scored_at",
    ]
    by_id = that_day.set_index("customer_id").loc[written["customer_id"]]
    expected = pipeline.predict_proba(by_id[pipeline.feature_names_in_])[:, 1]
    np.testing.assert_allclose(written["prediction"], expected, rtol=1e-9)

    again = score_partition(settings, "demo", day)
    assert again["output"] == done["output"] and len(pd.read_parquet(again["output"])) == len(
        written
    )


def test_a_file_missing_a_feature_is_refused_naming_it(settings, demo_champion, tmp_path):
    _, frame = demo_champion
    source = tmp_path / "scores_in.csv"
    frame.drop(columns=["income"]).head(20).to_csv(source, index=False)
    with pytest.raises(BadInput, match=r"missing feature column\(s\) income"):
        score_partition(settings, "demo", "2025-06-01", str(source))


def test_no_champion_or_an_empty_day_is_bad_input(settings, demo_champion):
    with pytest.raises(BadInput, match="the partition 1999-01-01 of the spec source has no rows"):
        score_partition(settings, "demo", "1999-01-01")
    from maestro import tracking

    tracking.client(settings).delete_registered_model_alias("demo", "champion")
    with pytest.raises(BadInput, match="demo has no champion: nothing to score with"):
        score_partition(settings, "demo", "2025-06-01")

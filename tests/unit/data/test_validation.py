"""The Great Expectations suite derived from a spec catches what the spec rules out."""

from __future__ import annotations

import pandas as pd
import pytest

from maestro.data import sources
from maestro.data.validation import validate
from maestro.spec import get_spec


@pytest.fixture
def demo(small_specs):
    spec = get_spec("demo", small_specs)
    return spec, sources.load_snapshot(
        sources.ingest(spec, small_specs, None).to_dict(), small_specs
    )


@pytest.mark.slow
def test_clean_snapshot_passes_and_writes_data_docs(demo, tmp_path):
    spec, frame = demo
    report = validate(frame, spec, tmp_path)
    assert report.success, report.summary()
    assert report.evaluated > 30
    assert (report.docs_dir / "index.html").exists()


@pytest.mark.slow
def test_each_broken_rule_is_named(demo, tmp_path):
    spec, frame = demo
    frame = frame.copy()
    frame.loc[:9, "age"] = 150  # out of range
    frame.loc[:4, "region"] = "mars"  # not an allowed category
    frame.loc[:2, "income"] = None  # nulls where none are allowed
    frame.loc[5, "customer_id"] = frame.loc[6, "customer_id"]
    frame.loc[5, "event_timestamp"] = frame.loc[6, "event_timestamp"]  # duplicate entity + time
    report = validate(frame, spec, tmp_path)
    assert not report.success
    summary = report.summary()
    for part in [
        "expect_column_values_to_be_between(age) 10 unexpected values",
        "expect_column_values_to_be_in_set(region) 5 unexpected values",
        "expect_column_values_to_not_be_null(income) 3 unexpected values",
        "expect_compound_columns_to_be_unique(['customer_id', 'event_timestamp'])",
    ]:
        assert part in summary, summary
    assert summary.startswith("4 of ")


@pytest.mark.slow
def test_row_count_bounds(demo, tmp_path):
    spec, frame = demo
    report = validate(frame.head(50), spec, tmp_path)
    assert "expect_table_row_count_to_be_between observed 50" in report.summary()


@pytest.mark.slow
def test_null_fraction_within_spec_passes(settings, tmp_path):
    from tests.support import needs_shared_data

    needs_shared_data("adult.csv")
    spec = get_spec("adult_income", settings)
    frame = sources.load_snapshot(sources.ingest(spec, settings, None).to_dict(), settings)
    assert frame["occupation"].isna().mean() > 0.05  # '?' in the real data
    assert validate(frame, spec, tmp_path).success
    frame.loc[: len(frame) // 5, "occupation"] = None  # 20% > max_null_fraction 0.1
    assert (
        "expect_column_values_to_not_be_null(occupation)"
        in validate(frame, spec, tmp_path / "again").summary()
    )


@pytest.mark.slow
def test_types_are_checked(demo, tmp_path):
    spec, frame = demo
    frame = frame.assign(income=frame["income"].astype(str))
    assert (
        "expect_column_values_to_be_in_type_list(income)"
        in validate(frame, spec, tmp_path).summary()
    )


def test_frame_fixture_is_time_ordered(demo):
    _, frame = demo
    assert frame["event_timestamp"].is_monotonic_increasing
    assert isinstance(frame["event_timestamp"].iloc[0], pd.Timestamp)

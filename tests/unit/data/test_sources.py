"""Ingest: every kind of bad source fails early with one clear message; snapshots are
content-addressed and never rewritten."""

from __future__ import annotations

import pandas as pd
import pytest

from maestro.data import sources
from maestro.data.synthetic import generate
from maestro.spec import get_spec

COLUMNS = [
    "customer_id",
    "event_timestamp",
    "age",
    "income",
    "tenure_months",
    "num_products",
    "balance",
    "support_calls",
    "region",
    "plan",
    "group",
    "churned",
]


@pytest.fixture
def csv_spec(tmp_path, use_specs):
    """The demo spec reading a CSV file the test writes."""
    path = tmp_path / "source.csv"
    s = use_specs({"demo": {"source": {"format": "csv", "path": str(path)}}})
    return get_spec("demo", s), s, path


def good_frame(rows: int = 500) -> pd.DataFrame:
    return generate(rows, seed=1)


def ingest_error(spec, settings) -> str:
    with pytest.raises(sources.DataError) as info:
        sources.ingest(spec, settings, None)
    return str(info.value)


def test_missing_file(csv_spec):
    spec, s, path = csv_spec
    assert ingest_error(spec, s) == f"{path}: source file not found"


def test_empty_file(csv_spec):
    spec, s, path = csv_spec
    path.write_text("")
    assert ingest_error(spec, s) == f"{path}: source file is empty"


def test_header_only_file(csv_spec):
    spec, s, path = csv_spec
    path.write_text(",".join(COLUMNS) + "\n")
    assert "the source has no rows" in ingest_error(spec, s)


def test_wrong_encoding(csv_spec):
    spec, s, path = csv_spec
    good_frame().to_csv(path, index=False, encoding="utf-16")
    message = ingest_error(spec, s)
    assert str(path) in message and "cannot be decoded as utf-8" in message


def test_missing_column(csv_spec):
    spec, s, path = csv_spec
    good_frame().drop(columns=["income"]).to_csv(path, index=False)
    assert ingest_error(spec, s) == f"{path}: missing columns ['income'] declared in the spec"


def test_extra_column(csv_spec):
    spec, s, path = csv_spec
    good_frame().assign(secret_score=1).to_csv(path, index=False)
    assert "undeclared columns ['secret_score']" in ingest_error(spec, s)


def test_wrong_type(csv_spec):
    spec, s, path = csv_spec
    frame = good_frame()
    frame["age"] = frame["age"].astype(str)
    frame.loc[3, "age"] = "forty"
    frame.to_csv(path, index=False)
    assert "column 'age' should be int but has 1 non-numeric values (e.g. 'forty')" in ingest_error(
        spec, s
    )


def test_target_with_one_class(csv_spec):
    spec, s, path = csv_spec
    good_frame().assign(churned=0).to_csv(path, index=False)
    assert "target 'churned' has a single class ['0']; need two" in ingest_error(spec, s)


def test_snapshot_is_content_addressed_and_immutable(csv_spec):
    spec, s, path = csv_spec
    good_frame().to_csv(path, index=False)
    first = sources.ingest(spec, s, None)
    again = sources.ingest(spec, s, None)
    assert first == again
    written = pd.read_parquet(first.path)
    assert len(written) == first.rows == 500
    assert list(written.columns) == COLUMNS
    frame = good_frame()
    frame.loc[0, "age"] = 77
    frame.to_csv(path, index=False)
    changed = sources.ingest(spec, s, None)
    assert changed.hash != first.hash and changed.path != first.path
    assert pd.read_parquet(first.path).equals(written)


def test_window_keeps_rows_before_the_run_end(csv_spec):
    spec, s, path = csv_spec
    good_frame(1000).to_csv(path, index=False)
    end = pd.Timestamp("2025-07-01", tz="UTC")
    version = sources.ingest(spec, s, end)
    assert pd.Timestamp(version.end) < end
    assert 400 < version.rows < 600


def test_demo_data_is_deterministic_and_has_knobs():
    assert generate(2000, seed=3).equals(generate(2000, seed=3))
    fair, biased = generate(20000, seed=3), generate(20000, seed=3, bias=0.8)

    def gap(f):
        return f.groupby("group")["churned"].mean().diff().iloc[-1]

    assert abs(gap(fair)) < 0.03 and gap(biased) > 0.2
    drifted = generate(20000, seed=3, drift=1.0)
    assert drifted["income"].tail(2000).mean() > 1.3 * drifted["income"].head(2000).mean()


def test_adult_data_loads_with_missing_values(settings):
    from tests.support import needs_shared_data

    needs_shared_data("adult.csv")
    spec = get_spec("adult_income", settings)
    version = sources.ingest(spec, settings, None)
    frame = pd.read_parquet(version.path)
    assert version.rows == 32561
    assert frame["workclass"].isna().sum() > 1000  # '?' became missing
    assert set(frame["class"].unique()) == {0, 1}
    assert frame["person_id"].is_unique


def test_sql_source(tmp_path, monkeypatch, use_specs):
    """A spec whose source is a SQL query, read through SQLAlchemy from the URL in an env var."""
    import sqlalchemy

    from maestro.config import get_settings

    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    good_frame(300).assign(event_timestamp=lambda f: f.event_timestamp.astype(str)).to_sql(
        "customers", sqlalchemy.create_engine(url), index=False
    )
    use_specs(
        {
            "demo": {
                "source": {
                    "format": "sql",
                    "query": "SELECT * FROM customers WHERE age >= 30",
                    "connection_env": "WAREHOUSE_URL",
                }
            }
        }
    )
    spec = get_spec("demo", get_settings())
    with pytest.raises(sources.DataError, match="environment variable WAREHOUSE_URL is not set"):
        sources.ingest(spec, get_settings(), None)
    monkeypatch.setenv("WAREHOUSE_URL", url)
    version = sources.ingest(spec, get_settings(), None)
    frame = pd.read_parquet(version.path)
    assert version.rows == (good_frame(300)["age"] >= 30).sum() == len(frame)
    assert str(frame["event_timestamp"].dtype) == "datetime64[ns, UTC]"

"""Model specs: the shipped ones load; bad ones fail with the file and field named."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from maestro.spec import SpecError, load_spec, spec_paths
from tests.support import PROJECT

SPECS = PROJECT / "include" / "specs"


def write(tmp_path: Path, name: str, change) -> Path:
    raw = yaml.safe_load((SPECS / "demo.yaml").read_text())
    change(raw)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_shipped_specs_load(settings):
    names = {load_spec(p).name for p in spec_paths(settings)}
    assert names == {"demo", "adult_income", "bike_demand", "churn_mlp", "forest_cover"}


def test_bike_spec_keeps_leaking_columns_out():
    spec = load_spec(SPECS / "bike_demand.yaml")
    assert {"casual", "registered"} <= set(spec.drop)
    assert not {"casual", "registered"} & set(spec.feature_names)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            lambda r: r.update(colour="blue"),
            "colour: is not a field here (check its spelling and indentation)",
        ),
        (
            lambda r: r["search_space"]["lightgbm"].update(
                num_leaves={"type": "int", "low": 64, "high": 8}
            ),
            "search_space.lightgbm.num_leaves: impossible range: low 64.0 > high 8.0",
        ),
        (
            lambda r: r["search_space"]["lightgbm"].update(
                learning_rate={"type": "float", "low": 0, "high": 1, "log": True}
            ),
            "learning_rate: log scale needs low > 0",
        ),
        (
            lambda r: r.update(metric={"name": "rmse", "direction": "minimize"}),
            "metric.name: 'rmse' does not fit task 'binary_classification'",
        ),
        (lambda r: r["features"].append({"name": "age", "type": "int"}), "duplicate names ['age']"),
        (
            lambda r: r.update(protected_attributes=["gender"]),
            "protected_attributes: ['gender'] are not features",
        ),
        (lambda r: r.update(trials=0), "trials: must be at least 1, got 0"),
        (lambda r: r["features"][0].update(type="integer"), "features.0.type"),
        (lambda r: r.update(search_space={"ridge": {}}), "search_space: families ['ridge'] do not"),
        (lambda r: r.update(search_space={}), "search_space: needs at least 1 entry, got none"),
        (
            lambda r: r["search_space"].update(xgbost={}),
            "search_space: ['xgbost'] are neither built-in families (catboost, lightgbm,",
        ),
        (lambda r: r.update(trials="many"), "trials: must be an int, got 'many'"),
        (
            lambda r: r.update(trainers={"mine": {"function": "trainers/mine.py"}}),
            "trainers.mine.function: 'trainers/mine.py' is not of the form package.module:function",
        ),
        (
            lambda r: r.update(trainers={"mine": {"function": "trainers.mine:train"}}),
            "trainers: ['mine'] are declared but not in search_space",
        ),
        (
            lambda r: r.update(trainers={"lightgbm": {"function": "trainers.mine:train"}}),
            "trainers: ['lightgbm'] are names of built-in families",
        ),
        (
            lambda r: r["monitoring"].update(performance={"rmse": {"max": 100}}),
            "monitoring.performance: ['rmse'] are not metrics of 'binary_classification'",
        ),
        (
            lambda r: r["monitoring"].update(drift={"share": 1.5}),
            "monitoring.drift.share: must be at most 1, got 1.5",
        ),
        (
            lambda r: r["monitoring"].update(drift={"num_method": "chisquare"}),
            "monitoring.drift.num_method: 'chisquare' is not one of",
        ),
        (
            lambda r: r["monitoring"].update(window_hours=0),
            "monitoring.window_hours: must be greater than 0, got 0",
        ),
        (
            lambda r: r["monitoring"].update(cooldown="1h"),
            "monitoring.cooldown: is not a field here",
        ),
        # names as ingest reads columns: `a-ge` would be read as `a_ge`, and could never match
        (
            lambda r: r["features"].append({"name": "a-ge", "type": "int"}),
            "features.9.name: 'a-ge' is not a column name as ingest reads it",
        ),
        (
            lambda r: r["features"].append({"name": "customer_id", "type": "int"}),
            "entity.key: 'customer_id' is also a feature or the target",
        ),
        (
            lambda r: r["features"].append({"name": "event_timestamp", "type": "int"}),
            "timestamp.column: 'event_timestamp' is also a feature or the target",
        ),
        (
            lambda r: r["entity"].update(key='id"]); import os; ["'),
            "entity.key: 'id\"]); import os; [\"' is not a column name",
        ),
    ],
)
def test_bad_spec_names_file_and_field(tmp_path, change, expected):
    path = write(tmp_path, "demo", change)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(path) in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize("family", ["lightgbm", "xgboost", "catboost"])
def test_one_family_alone_is_a_search_space(tmp_path, family):
    """Tuning one family (or one trainer) is allowed: the search is over its parameters."""
    path = write(tmp_path, "demo", lambda r: r.update(search_space={family: {}}))
    assert set(load_spec(path).search_space) == {family}


def test_a_trainer_must_be_findable_in_the_trainer_packages(tmp_path, settings, monkeypatch):
    """Checked when the spec is read with settings (as every task and DAG file reads it),
    without importing the trainer's module itself."""
    from maestro.spec import check_trainers

    def spec_with(function: str):
        def change(raw):
            raw["trainers"] = {"mine": {"function": function}}
            raw["search_space"]["mine"] = {}

        return load_spec(write(tmp_path, "demo", change))

    check_trainers(spec_with("trainers.tabular_mlp:train"), settings)  # shipped, not imported
    with pytest.raises(SpecError, match=r"trainers.mine.function: no module named 'trainers.nope'"):
        check_trainers(spec_with("trainers.nope:train"), settings)
    with pytest.raises(SpecError, match=r"'os' is outside the trainer packages \(trainers\)"):
        check_trainers(spec_with("os:system"), settings)
    with pytest.raises(SpecError, match="module 'elsewhere.mod' cannot be imported"):
        check_trainers(
            spec_with("elsewhere.mod:train"),
            settings.model_copy(update={"trainer_packages": "trainers,elsewhere"}),
        )


def test_spec_name_must_match_file(tmp_path):
    path = write(tmp_path, "other", lambda r: None)
    with pytest.raises(SpecError, match="must match the file name 'other'"):
        load_spec(path)


def test_missing_and_malformed_spec_files(tmp_path):
    with pytest.raises(SpecError, match="model spec file not found"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)

"""The evaluation gates on hand-made scores, where the right verdict is known in advance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from maestro.config import Settings
from maestro.governance.gates import (
    champion_check,
    evaluate_challenger,
    failed_names,
    fairness_checks,
    threshold_checks,
)
from maestro.spec import get_spec


@pytest.fixture(scope="module")
def demo():
    """The shipped demo spec: roc_auc >= 0.65, tolerance 0.01, decision threshold 0.25,
    protected `group`, fairness limits 0.1 / 0.15 / 0.8."""
    return get_spec("demo", Settings())


def test_value_thresholds_pass_and_fail_at_the_bound(demo):
    assert threshold_checks(demo, {"roc_auc": 0.65})[0].passed
    failed = threshold_checks(demo, {"roc_auc": 0.64})[0]
    assert not failed.passed and failed.name == "threshold:roc_auc" and failed.limit == ">= 0.65"


def test_the_champion_may_be_beaten_or_matched_within_the_tolerance(demo):
    assert champion_check(demo, {"roc_auc": 0.80}, None) == []
    assert champion_check(demo, {"roc_auc": 0.795}, {"roc_auc": 0.80})[0].passed
    worse = champion_check(demo, {"roc_auc": 0.78}, {"roc_auc": 0.80})[0]
    assert not worse.passed and worse.detail == "champion 0.8, tolerance 0.01"
    rmse = get_spec("bike_demand", Settings())  # minimize: lower is better
    assert champion_check(rmse, {"rmse": 40.0}, {"rmse": 45.0})[0].passed
    assert not champion_check(rmse, {"rmse": 50.0}, {"rmse": 45.0})[0].passed


def scores_for(groups: np.ndarray, rate_a: float, rate_b: float, rows: int) -> np.ndarray:
    """Scores that select (>= 0.25) `rate_a` of group a and `rate_b` of group b."""
    rng = np.random.default_rng(0)
    selected = np.where(groups == "a", rng.random(rows) < rate_a, rng.random(rows) < rate_b)
    return np.where(selected, 0.9, 0.1)


def test_equal_selection_passes_and_a_biased_one_fails_the_four_fifths_rule(demo):
    rows = 2000
    groups = pd.Series(np.array(["a", "b"] * (rows // 2)))
    y = np.random.default_rng(1).integers(0, 2, rows)
    fair = scores_for(groups.to_numpy(), 0.3, 0.3, rows)
    values, checks = fairness_checks(demo, "group", y, fair, groups)
    assert all(c.passed for c in checks), checks
    biased = scores_for(groups.to_numpy(), 0.5, 0.2, rows)
    values, checks = fairness_checks(demo, "group", y, biased, groups)
    assert values["selection_rate_ratio"] == pytest.approx(0.4, abs=0.05)
    failed = {c.name for c in checks if not c.passed}
    assert "fairness:group:selection_rate_ratio" in failed
    assert "fairness:group:demographic_parity_difference" in failed


def test_groups_too_small_to_judge_are_named_and_one_group_is_not_a_comparison(demo):
    groups = pd.Series(["a"] * 500 + ["b"] * 5)
    y = np.zeros(505, dtype=int)
    _, checks = fairness_checks(demo, "group", y, np.full(505, 0.1), groups)
    assert [c.passed for c in checks] == [False]
    assert checks[0].limit == "two groups to compare"


def test_the_whole_evaluation_judges_at_the_decision_threshold(demo):
    """Accuracy and F1 count as positive what the fairness gates count: scores >= 0.25."""
    rows = 1000
    test = pd.DataFrame(
        {
            "group": ["a", "b"] * (rows // 2),
            "age": np.arange(rows) % 70 + 18,
            "plan": ["basic", "plus"] * (rows // 2),
            "churned": [1, 1, 0, 0] * (rows // 4),  # the same churn rate in both groups
        }
    )
    score = np.where(test["churned"] == 1, 0.3, 0.1)  # perfect at 0.25, useless at 0.5
    result = evaluate_challenger(demo, test, score, None)
    assert result["metrics"]["accuracy"] == 1.0 and result["metrics"]["f1"] == 1.0
    assert failed_names(result["checks"]) == []
    assert set(result["slices"]) == {"group", "age_band", "plan"}


def test_a_large_split_is_sliced_on_a_fixed_sample_and_measured_whole(demo):
    """Past SLICE_ROWS rows, slices and fairness see a fixed sample; the metrics see every
    row (here the sample's groups differ from the whole split's only by sampling)."""
    from maestro.governance.gates import SLICE_ROWS
    from maestro.training.families import evaluate

    rows = SLICE_ROWS + 10_000
    rng = np.random.default_rng(1)
    test = pd.DataFrame(
        {
            "group": rng.choice(["a", "b"], rows),
            "age": rng.integers(18, 90, rows),
            "plan": rng.choice(["basic", "plus"], rows),
            "churned": rng.integers(0, 2, rows),
        }
    )
    score = np.clip(test["churned"] * 0.5 + rng.normal(0.2, 0.2, rows), 0, 1).to_numpy()
    result = evaluate_challenger(demo, test, score, None)
    assert result["rows"] == rows and result["slice_rows"] == SLICE_ROWS
    assert sum(group["count"] for group in result["slices"]["group"]) == SLICE_ROWS
    assert result["metrics"] == evaluate(demo, test["churned"].to_numpy(), score)
    again = evaluate_challenger(demo, test, score, None)
    assert again["slices"] == result["slices"]  # the same sample every time
    rates = {g["group"]: g["selection_rate"] for g in result["slices"]["group"]}
    truth = test.assign(s=score >= 0.25).groupby("group")["s"].mean()
    assert all(abs(rates[g] - truth[g]) < 0.01 for g in ("a", "b"))

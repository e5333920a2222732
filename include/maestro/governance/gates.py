"""Evaluation gates: may this challenger replace the champion?

Everything is computed on the run's held-out test split: value thresholds from the spec, the
change against the champion scored on the same rows, sliced metrics (fairlearn's MetricFrame)
for every protected attribute and configured slice, and fairness gates (on a fixed sample of
SLICE_ROWS rows when the split is larger: `slice_sample`). Each gate is a `Check`; the verdict
passes only when every check does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from maestro.spec import ModelSpec
from maestro.training.families import evaluate, per_class_recall

SLICE_ROWS = 50_000


@dataclass(frozen=True)
class Check:
    """One gate: its name (kind:subject), whether it passed, the value and the limit."""

    name: str
    passed: bool
    value: float | None
    limit: str
    detail: str = ""


def threshold_checks(spec: ModelSpec, metrics: dict[str, float]) -> list[Check]:
    checks = []
    for metric, bound in spec.governance.thresholds.items():
        value = metrics[metric]
        if bound.min is not None:
            checks.append(
                Check(f"threshold:{metric}", value >= bound.min, value, f">= {bound.min}")
            )
        if bound.max is not None:
            checks.append(
                Check(f"threshold:{metric}", value <= bound.max, value, f"<= {bound.max}")
            )
    return checks


def champion_check(
    spec: ModelSpec, metrics: dict[str, float], champion: dict[str, float] | None
) -> list[Check]:
    """The primary metric may be worse than the champion's, on the same rows, by the tolerance."""
    if champion is None:
        return []
    name, tolerance = spec.metric.name, spec.governance.tolerance
    ours, theirs = metrics[name], champion[name]
    if spec.metric.direction == "maximize":
        return [
            Check(
                f"champion:{name}",
                ours >= theirs - tolerance,
                ours,
                f">= {theirs - tolerance:.4g}",
                f"champion {theirs:.4g}, tolerance {tolerance}",
            )
        ]
    return [
        Check(
            f"champion:{name}",
            ours <= theirs + tolerance,
            ours,
            f"<= {theirs + tolerance:.4g}",
            f"champion {theirs:.4g}, tolerance {tolerance}",
        )
    ]


def class_recall_checks(spec: ModelSpec, recall: dict[str, float | None]) -> list[Check]:
    """Multiclass, when the spec asks for a minimum per class: each class's recall reaches it
    (a class with no test rows cannot show it does, and fails)."""
    least = spec.governance.min_class_recall
    if least is None:
        return []
    return [
        Check(
            f"class_recall:{label}",
            value is not None and value >= least,
            value,
            f">= {least}",
            "" if value is not None else "no rows of this class in the test split",
        )
        for label, value in recall.items()
    ]


def slice_columns(spec: ModelSpec, test: pd.DataFrame) -> dict[str, pd.Series]:
    """Every protected attribute and configured slice as a column of group labels."""
    columns = {
        name: test[name].astype("string").fillna("(missing)") for name in spec.protected_attributes
    }
    for extra in spec.governance.slices:
        values = test[extra.feature]
        if extra.bins is not None:
            bands = pd.cut(values, bins=extra.bins, right=False)
            label = f"{extra.feature}_band"
            columns[label] = bands.astype("string").fillna("(out of bands)")
        else:
            columns[extra.feature] = values.astype("string").fillna("(missing)")
    return columns


def _safe_auc(y_true: Any, y_score: Any) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y_true, y_score)) if len(np.unique(y_true)) == 2 else float("nan")


def sliced_metrics(
    spec: ModelSpec, y: np.ndarray, y_score: np.ndarray, groups: pd.Series
) -> pd.DataFrame:
    """One row per group: size and the task's metrics (fairlearn MetricFrame)."""
    from fairlearn.metrics import (
        MetricFrame,
        count,
        false_positive_rate,
        selection_rate,
        true_positive_rate,
    )
    from sklearn import metrics as m

    if spec.multiclass:
        frame = MetricFrame(
            metrics={
                "count": count,
                "accuracy": m.accuracy_score,
                "f1_macro": lambda t, p: m.f1_score(t, p, average="macro", zero_division=0),
            },
            y_true=y,
            y_pred=y_score.argmax(axis=1),
            sensitive_features=groups.to_numpy(),
        )
        table = frame.by_group
    elif spec.task == "binary_classification":
        labels = (y_score >= spec.governance.decision_threshold).astype(int)
        frame = MetricFrame(
            metrics={
                "count": count,
                "accuracy": m.accuracy_score,
                "selection_rate": selection_rate,
                "true_positive_rate": true_positive_rate,
                "false_positive_rate": false_positive_rate,
            },
            y_true=y,
            y_pred=labels,
            sensitive_features=groups.to_numpy(),
        )
        table = frame.by_group
        auc = MetricFrame(
            metrics=_safe_auc, y_true=y, y_pred=y_score, sensitive_features=groups.to_numpy()
        )
        table["roc_auc"] = auc.by_group
    else:
        frame = MetricFrame(
            metrics={
                "count": count,
                "rmse": lambda t, p: float(np.sqrt(m.mean_squared_error(t, p))),
                "mae": m.mean_absolute_error,
            },
            y_true=y,
            y_pred=y_score,
            sensitive_features=groups.to_numpy(),
        )
        table = frame.by_group
    table.index.name = "group"
    return table.reset_index()


def fairness_checks(
    spec: ModelSpec,
    attribute: str,
    y: np.ndarray,
    y_score: np.ndarray,
    groups: pd.Series,
) -> tuple[dict[str, float], list[Check]]:
    """Fairness metrics for one protected attribute, over groups big enough to judge."""
    from fairlearn.metrics import (
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
    )

    rules = spec.governance.fairness
    sizes = groups.value_counts()
    judged = groups.isin(sizes[sizes >= rules.min_group_size].index).to_numpy()
    skipped = sorted(sizes[sizes < rules.min_group_size].index)
    detail = f"groups under {rules.min_group_size} rows not judged: {skipped}" if skipped else ""
    if judged.sum() == 0 or groups[judged].nunique() < 2:
        return {}, [
            Check(
                f"fairness:{attribute}",
                False,
                None,
                "two groups to compare",
                f"fewer than two groups of {rules.min_group_size}+ rows",
            )
        ]
    y, y_score, g = y[judged], y_score[judged], groups[judged].to_numpy()
    if spec.multiclass:
        values, limits, detail = one_vs_rest_fairness(spec, y, y_score, g, detail)
    elif spec.task == "binary_classification":
        labels = (y_score >= spec.governance.decision_threshold).astype(int)
        values = {
            "demographic_parity_difference": float(
                demographic_parity_difference(y, labels, sensitive_features=g)
            ),
            "equalized_odds_difference": float(
                equalized_odds_difference(y, labels, sensitive_features=g)
            ),
            "selection_rate_ratio": float(
                demographic_parity_ratio(y, labels, sensitive_features=g)
            ),
        }
        limits = {
            "demographic_parity_difference": ("<=", rules.demographic_parity_difference_max),
            "equalized_odds_difference": ("<=", rules.equalized_odds_difference_max),
            "selection_rate_ratio": (">=", rules.selection_rate_ratio_min),
        }
    else:
        overall = float(np.sqrt(np.mean((y - y_score) ** 2)))
        worst = max(
            float(np.sqrt(np.mean((y[g == group] - y_score[g == group]) ** 2)))
            for group in np.unique(g)
        )
        values = {"error_ratio": worst / overall if overall > 0 else 1.0}
        limits = {"error_ratio": ("<=", rules.error_ratio_max)}
    checks = []
    for name, value in values.items():
        op, limit = limits[name]
        ok = value <= limit if op == "<=" else value >= limit
        if np.isnan(value):
            ok = False
        checks.append(
            Check(f"fairness:{attribute}:{name}", bool(ok), value, f"{op} {limit}", detail)
        )
    return values, checks


def one_vs_rest_fairness(
    spec: ModelSpec,
    y: np.ndarray,
    y_score: np.ndarray,
    g: np.ndarray,
    detail: str,
) -> tuple[dict[str, float], dict[str, tuple[str, float]], str]:
    """Multiclass fairness as fairlearn defines it, for binary decisions: each class one
    against the rest (predicted = most probable class), judged on its worst class; the detail
    names that class. Classes absent from the judged rows are left out."""
    from fairlearn.metrics import (
        demographic_parity_difference,
        demographic_parity_ratio,
        equalized_odds_difference,
    )

    rules = spec.governance.fairness
    predicted = y_score.argmax(axis=1)
    per_class: dict[str, dict[int, float]] = {
        "demographic_parity_difference": {},
        "equalized_odds_difference": {},
        "selection_rate_ratio": {},
    }
    for code in np.unique(y):
        truth, chosen = (y == code).astype(int), (predicted == code).astype(int)
        per_class["demographic_parity_difference"][code] = float(
            demographic_parity_difference(truth, chosen, sensitive_features=g)
        )
        per_class["equalized_odds_difference"][code] = float(
            equalized_odds_difference(truth, chosen, sensitive_features=g)
        )
        per_class["selection_rate_ratio"][code] = float(
            demographic_parity_ratio(truth, chosen, sensitive_features=g)
        )
    worst = {
        "demographic_parity_difference": max,
        "equalized_odds_difference": max,
        "selection_rate_ratio": min,
    }
    values, notes = {}, []
    for name, by_class in per_class.items():
        code = worst[name](by_class, key=lambda c: np.nan_to_num(by_class[c], nan=-np.inf))
        values[name] = by_class[code]
        notes.append(f"{name} worst for class {spec.classes[code]}")
    limits = {
        "demographic_parity_difference": ("<=", rules.demographic_parity_difference_max),
        "equalized_odds_difference": ("<=", rules.equalized_odds_difference_max),
        "selection_rate_ratio": (">=", rules.selection_rate_ratio_min),
    }
    note = "one class against the rest, worst class: " + "; ".join(notes)
    return values, limits, "; ".join(filter(None, [detail, note]))


def evaluate_challenger(
    spec: ModelSpec,
    test: pd.DataFrame,
    y_score: np.ndarray,
    champion_score: np.ndarray | None,
) -> dict[str, Any]:
    """Every gate on the test split: metrics, champion comparison, per-class recall
    (multiclass), slices and fairness."""
    y = test[spec.target.name].to_numpy()
    metrics = evaluate(spec, y, y_score)
    champion = evaluate(spec, y, champion_score) if champion_score is not None else None
    checks = threshold_checks(spec, metrics) + champion_check(spec, metrics, champion)
    per_class = per_class_recall(y, y_score, spec.classes) if spec.multiclass else {}
    checks += class_recall_checks(spec, per_class)
    slices, fairness = {}, {}
    rows = slice_sample(len(test))
    y_slice, score_slice = y[rows], y_score[rows]
    for name, groups in slice_columns(spec, test.iloc[rows]).items():
        slices[name] = sliced_metrics(spec, y_slice, score_slice, groups).to_dict(orient="records")
        if name in spec.protected_attributes:
            fairness[name], found = fairness_checks(spec, name, y_slice, score_slice, groups)
            checks += found
    return {
        "metrics": metrics,
        "champion_metrics": champion,
        "slices": slices,
        "fairness": fairness,
        "per_class_recall": per_class,
        "undefined_classes": [label for label, value in per_class.items() if value is None],
        "checks": [asdict(c) for c in checks],
        "rows": len(test),
        "slice_rows": len(rows),
    }


def slice_sample(rows: int) -> np.ndarray:
    """The test rows that slices and fairness are judged on: all of them up to SLICE_ROWS, else
    a fixed random sample of SLICE_ROWS (in their order). At that size a group's rates are
    known to within about a percentage point, and fairlearn's MetricFrame, which handles
    every row in Python, would take a minute for the 600,000 test rows of a 3M-row run."""
    if rows <= SLICE_ROWS:
        return np.arange(rows)
    return np.sort(np.random.default_rng(0).choice(rows, SLICE_ROWS, replace=False))


def failed_names(checks: list[dict]) -> list[str]:
    return [c["name"] for c in checks if not c["passed"]]

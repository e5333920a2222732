"""Global feature importance as mean absolute SHAP values, per raw feature.

Exact SHAP values without another dependency: LightGBM computes TreeSHAP itself
(`pred_contrib=True`); for linear models the SHAP value of a column is its coefficient times
the column's deviation from its mean (the linear explainer's independent-features case).
Columns one feature was encoded into (one-hot) are summed back to that feature, as SHAP
values add up. XGBoost and CatBoost compute TreeSHAP themselves too. Random forests and your
own trainers' models get the model-agnostic permutation importance on a sample, and say so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from maestro.spec import ModelSpec
from maestro.training.families import SCALED


def _raw_feature(column: str, features: list[str]) -> str:
    """The raw feature an encoded column came from (the longest name it starts with)."""
    if column in features:
        return column
    owners = [f for f in features if column.startswith(f + "_")]
    return max(owners, key=len)


EXACT = {"lightgbm", "xgboost", "catboost", *SCALED}  # families with exact SHAP values
PERMUTATION_ROWS = 1000  # the sample a model-agnostic explanation permutes


def column_contributions(model: Any, family: str, X: pd.DataFrame) -> list[pd.DataFrame]:
    """SHAP values per encoded column, one row per row of X: one frame for a binary classifier
    or a regressor, one per class (of its probability's log-odds) for a multiclass model."""
    prep, estimator = model[:-1], model[-1]
    encoded = prep.transform(X)
    width = encoded.shape[1]
    if family == "lightgbm":
        values = estimator.booster_.predict(encoded, pred_contrib=True)
        values = values.reshape(len(X), -1, width + 1)[:, :, :-1]
    elif family == "xgboost":
        import xgboost as xgb

        matrix = xgb.DMatrix(
            encoded, feature_types=estimator.feature_types, enable_categorical=True
        )
        values = estimator.get_booster().predict(matrix, pred_contribs=True)
        values = values.reshape(len(X), -1, width + 1)[:, :, :-1]
    elif family == "catboost":
        from catboost import Pool

        pool = Pool(encoded, cat_features=estimator.get_param("cat_features"))
        values = estimator.get_feature_importance(pool, type="ShapValues")
        values = values.reshape(len(X), -1, width + 1)[:, :, :-1]
    elif family in SCALED:
        coef = np.atleast_2d(estimator.coef_)
        centred = encoded.to_numpy(dtype=float) - encoded.to_numpy(dtype=float).mean(axis=0)
        values = centred[:, None, :] * coef[None, :, :]
    else:
        raise ValueError(f"no exact SHAP values for family {family!r}")
    return [
        pd.DataFrame(values[:, k, :], columns=list(encoded.columns), index=X.index)
        for k in range(values.shape[1])
    ]


def shap_importance(
    model: Any,
    spec: ModelSpec,
    family: str,
    X: pd.DataFrame,
    y: Any,
) -> pd.DataFrame:
    """Mean |SHAP| per raw feature, largest first (`method` says how it was computed): exact
    for the families in EXACT, else the model-agnostic permutation importance of the spec's
    metric on a sample of PERMUTATION_ROWS rows. A multiclass model's table has a column per
    class (`class <label>`) and, as `importance`, their mean."""
    if family not in EXACT:
        table = permutation_table(model, spec, X.head(PERMUTATION_ROWS), y[: len(X)])
        return table.sort_values("importance", ascending=False, ignore_index=True)
    per_class = []
    for columns in column_contributions(model, family, X):
        owners = [_raw_feature(c, spec.feature_names) for c in columns.columns]
        per_feature = columns.T.groupby(owners).sum().T  # SHAP values add up across encodings
        per_class.append(per_feature.abs().mean())
    table = pd.DataFrame({"feature": per_class[0].index})
    if spec.multiclass:
        for label, values in zip(spec.classes, per_class, strict=True):
            table[f"class {label}"] = values.to_numpy()
    table["importance"] = np.mean([values.to_numpy() for values in per_class], axis=0)
    table["method"] = "mean |SHAP|" + (" per class, averaged" if spec.multiclass else "")
    return table.sort_values("importance", ascending=False, ignore_index=True)


def permutation_table(
    model: Any, spec: ModelSpec, X: pd.DataFrame, y: Any, repeats: int = 5
) -> pd.DataFrame:
    """How much the spec's metric worsens when each feature is shuffled (mean over `repeats`
    shuffles): works for any model the platform can score, scikit-learn or pyfunc, so it
    shuffles columns itself rather than ask for scikit-learn's `fit`."""
    from maestro.models import scores
    from maestro.training.families import evaluate

    sign = 1.0 if spec.metric.direction == "maximize" else -1.0
    truth = np.asarray(y)[: len(X)]

    def metric(rows: pd.DataFrame) -> float:
        return sign * evaluate(spec, truth, scores(model, spec, rows))[spec.metric.name]

    baseline = metric(X)
    rng = np.random.default_rng(0)
    drops = []
    for feature in X.columns:
        shuffled = X.copy()
        losses = []
        for _ in range(repeats):
            shuffled[feature] = X[feature].iloc[rng.permutation(len(X))].set_axis(X.index)
            losses.append(baseline - metric(shuffled))
        drops.append(float(np.mean(losses)))
    table = pd.DataFrame({"feature": list(X.columns), "importance": drops})
    table["method"] = f"permutation of {spec.metric.name} on {len(X)} rows (model-agnostic)"
    return table


def plot_importance(table: pd.DataFrame, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = table.head(20).iloc[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(shown) + 1.2))
    ax.barh(shown["feature"], shown["importance"], color="#3b6ea5")
    ax.set_xlabel(f"{table['method'].iloc[0]} (global importance)")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""Global importance on data where the answer is known: SHAP values add up to the model's
output, encoded columns are summed back to their feature, and the feature that decides the
label ranks first."""

from __future__ import annotations

import numpy as np
import pytest

from maestro.config import Settings
from maestro.data.synthetic import generate
from maestro.governance.explain import column_contributions, shap_importance
from maestro.spec import get_spec
from maestro.training.families import build_estimator, fit


@pytest.fixture(scope="module")
def decided_by_tenure():
    """The demo's features, with a label that only `tenure_months` decides."""
    spec = get_spec("demo", Settings())
    frame = generate(3000)
    X = frame[spec.feature_names]
    y = (X["tenure_months"] < 30).astype(int).to_numpy()
    return spec, X, y


@pytest.mark.parametrize(
    ("family", "params"),
    [
        ("lightgbm", {"n_estimators": 40, "num_leaves": 8}),
        ("xgboost", {"n_estimators": 40, "max_depth": 3}),
        ("catboost", {"iterations": 40, "depth": 3}),
        ("logistic_regression", {"C": 1.0}),
    ],
)
def test_the_deciding_feature_ranks_first_with_every_feature_named_once(
    decided_by_tenure, family, params
):
    spec, X, y = decided_by_tenure
    model = fit(build_estimator(spec, family, params), spec, family, X, y)
    table = shap_importance(model, spec, family, X.head(500), y[:500])
    assert table["feature"].iloc[0] == "tenure_months"
    assert sorted(table["feature"]) == sorted(spec.feature_names)  # one-hot summed back
    assert set(table["method"]) == {"mean |SHAP|"}
    assert (table["importance"].diff().dropna() <= 0).all()  # largest first


def test_tree_shap_values_add_up_to_the_raw_score(decided_by_tenure):
    spec, X, y = decided_by_tenure
    model = fit(build_estimator(spec, "lightgbm", {"n_estimators": 40}), spec, "lightgbm", X, y)
    rows = X.head(50)
    contributions = column_contributions(model, "lightgbm", rows)[0].sum(axis=1).to_numpy()
    raw = model[-1].booster_.predict(model[:-1].transform(rows), raw_score=True)
    expected_value = model[-1].booster_.predict(model[:-1].transform(rows), pred_contrib=True)[
        :, -1
    ]
    np.testing.assert_allclose(contributions + expected_value, raw, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("family", ["xgboost", "catboost"])
def test_xgboost_and_catboost_tree_shap_adds_up_to_their_raw_score(decided_by_tenure, family):
    """Their own TreeSHAP, categories included (the demo has `plan` and `region`), is exact:
    contributions plus the expected value give the margin each model predicts."""
    spec, X, y = decided_by_tenure
    params = {"n_estimators": 30} if family == "xgboost" else {"iterations": 30}
    model = fit(build_estimator(spec, family, params), spec, family, X, y)
    rows = X.head(50)
    contributions = column_contributions(model, family, rows)[0].sum(axis=1).to_numpy()
    probability = model.predict_proba(rows)[:, 1]
    margin = contributions + expected_value(model, family, rows)
    np.testing.assert_allclose(1 / (1 + np.exp(-margin)), probability, rtol=1e-5, atol=1e-6)


def expected_value(model, family: str, rows) -> np.ndarray:
    encoded = model[:-1].transform(rows)
    if family == "xgboost":
        import xgboost as xgb

        matrix = xgb.DMatrix(
            encoded, feature_types=model[-1].feature_types, enable_categorical=True
        )
        return model[-1].get_booster().predict(matrix, pred_contribs=True)[:, -1]
    from catboost import Pool

    pool = Pool(encoded, cat_features=model[-1].get_param("cat_features"))
    return model[-1].get_feature_importance(pool, type="ShapValues")[:, -1]


def test_a_family_without_exact_shap_values_says_so(decided_by_tenure):
    spec, X, y = decided_by_tenure
    model = fit(
        build_estimator(spec, "random_forest", {"n_estimators": 10}), spec, "random_forest", X, y
    )
    with pytest.raises(ValueError, match="no exact SHAP values for family 'random_forest'"):
        column_contributions(model, "random_forest", X.head(5))
    table = shap_importance(model, spec, "random_forest", X.head(300), y[:300])
    method = "permutation of roc_auc on 300 rows (model-agnostic)"
    assert set(table["method"]) == {method} and table["feature"].iloc[0] == "tenure_months"

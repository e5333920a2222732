"""Model families, their preprocessing, and the metrics a spec can ask for.

Every family is a scikit-learn `Pipeline` from the raw feature frame to a prediction, so
the logged model scores exactly what the feature service returns.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from maestro.spec import ModelSpec
from maestro.spec.sections import ParamSpec


def suggest(trial: Any, family: str, space: dict[str, ParamSpec]) -> dict[str, Any]:
    """Draw one configuration of `family` from its search space (names prefixed by family)."""
    params: dict[str, Any] = {}
    for name, p in space.items():
        key = f"{family}.{name}"
        if p.type == "categorical":
            params[name] = trial.suggest_categorical(key, p.choices)
        elif p.type == "int":
            params[name] = trial.suggest_int(key, int(p.low), int(p.high), log=p.log)
        else:
            params[name] = trial.suggest_float(key, p.low, p.high, log=p.log)
    return params


# Trees take ordinal-encoded categories as they are; linear models want one-hot and scaling;
# XGBoost wants unknown and missing categories as NaN; CatBoost takes the strings themselves.
SCALED = {"logistic_regression", "ridge"}
NATIVE_CATEGORIES = {"catboost"}
NAN_CODED = {"xgboost"}


def preparation(family: str) -> str:
    """Which preprocessing `family` shares with others (tuning fits each kind once)."""
    if family in SCALED:
        return "scaled"
    if family in NATIVE_CATEGORIES:
        return "native"
    return "nan_coded" if family in NAN_CODED else "ordinal"


def category_strings(frame: pd.DataFrame) -> pd.DataFrame:
    """Categories as CatBoost takes them: strings, a missing one (None or NaN) as `missing`."""
    return frame.astype("object").where(frame.notna(), "missing").astype(str)


def preprocessor(spec: ModelSpec, family: str) -> Any:
    """The unfitted preprocessing step of `family`'s pipeline (raw features to model input)."""
    kind = preparation(family)
    scale = kind == "scaled"
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, OrdinalEncoder, StandardScaler

    numeric = [f.name for f in spec.features if f.type != "category"]
    categorical = spec.categorical_features
    if scale:
        num = make_pipeline(SimpleImputer(strategy="median"), StandardScaler())
        cat = make_pipeline(
            SimpleImputer(strategy="constant", fill_value="missing"),
            OneHotEncoder(handle_unknown="ignore", min_frequency=5, sparse_output=False),
        )
    elif kind == "native":
        from sklearn.preprocessing import FunctionTransformer

        num = "passthrough"
        cat = FunctionTransformer(category_strings, feature_names_out="one-to-one")
    else:
        code = np.nan if kind == "nan_coded" else -1
        num = "passthrough"
        cat = OrdinalEncoder(
            handle_unknown="use_encoded_value", unknown_value=code, encoded_missing_value=code
        )
    transformer = ColumnTransformer(
        [("num", num, numeric), ("cat", cat, categorical)], verbose_feature_names_out=False
    )
    return transformer.set_output(transform="pandas")


def build_estimator(spec: ModelSpec, family: str, params: dict[str, Any], threads: int = 1) -> Any:
    """An unfitted pipeline of `family` with `params`."""
    from sklearn.pipeline import Pipeline

    classification = spec.classification
    seed = {"random_state": 0}
    if family == "lightgbm":
        import lightgbm as lgb

        cls = lgb.LGBMClassifier if classification else lgb.LGBMRegressor
        model = cls(**params, **seed, n_jobs=threads, verbose=-1)  # type: ignore[arg-type]
        return Pipeline([("prep", preprocessor(spec, family)), ("model", model)])
    if family == "xgboost":
        import xgboost as xgb

        types = ["c" if f.type == "category" else "q" for f in ordered_features(spec)]
        cls = xgb.XGBClassifier if classification else xgb.XGBRegressor
        model = cls(
            **params,
            **seed,
            n_jobs=threads,
            tree_method="hist",
            enable_categorical=True,
            feature_types=types,
            max_cat_to_onehot=1,
        )
        return Pipeline([("prep", preprocessor(spec, family)), ("model", model)])
    if family == "catboost":
        import catboost

        cls = catboost.CatBoostClassifier if classification else catboost.CatBoostRegressor
        model = cls(
            **params,
            random_seed=0,
            thread_count=threads,
            cat_features=spec.categorical_features or None,
            verbose=0,
            allow_writing_files=False,  # else it writes catboost_info/ into the working folder
        )
        return Pipeline([("prep", preprocessor(spec, family)), ("model", model)])
    if family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        cls = RandomForestClassifier if classification else RandomForestRegressor
        model = cls(**params, **seed, n_jobs=threads)
        return Pipeline([("prep", preprocessor(spec, family)), ("model", model)])
    if family == "logistic_regression":
        from sklearn.linear_model import LogisticRegression

        model = LogisticRegression(**params, max_iter=2000)
    elif family == "ridge":
        from sklearn.linear_model import Ridge

        model = Ridge(**params)
    else:
        raise ValueError(f"unknown model family {family!r}")
    return Pipeline([("prep", preprocessor(spec, family)), ("model", model)])


def ordered_features(spec: ModelSpec) -> list[Any]:
    """The features in the order the preprocessor outputs them: numeric first, then categories."""
    return [f for f in spec.features if f.type != "category"] + [
        f for f in spec.features if f.type == "category"
    ]


def estimator_fit_params(spec: ModelSpec, family: str) -> dict[str, Any]:
    """Arguments the final estimator's `fit` needs: LightGBM is told which columns are categories."""
    if family == "lightgbm" and spec.categorical_features:
        return {"categorical_feature": spec.categorical_features}
    return {}


def fit(model: Any, spec: ModelSpec, family: str, X: pd.DataFrame, y: np.ndarray) -> Any:
    """Fit a pipeline from `build_estimator` with the arguments its family needs."""
    params = {f"model__{k}": v for k, v in estimator_fit_params(spec, family).items()}
    return model.fit(X, y, **params)


def evaluate(spec: ModelSpec, y_true: np.ndarray, y_score: np.ndarray) -> dict[str, float]:
    """Every metric of the spec's task; binary labels (accuracy, F1) at the spec's
    `decision_threshold`, the threshold the fairness gates judge at; multiclass labels are
    each row's most probable class."""
    from sklearn import metrics as m

    if spec.task == "binary_classification":
        labels = (y_score >= spec.governance.decision_threshold).astype(int)
        return {
            "roc_auc": float(m.roc_auc_score(y_true, y_score)),
            "accuracy": float(m.accuracy_score(y_true, labels)),
            "f1": float(m.f1_score(y_true, labels, zero_division=0)),
            "log_loss": float(m.log_loss(y_true, np.clip(y_score, 1e-7, 1 - 1e-7), labels=[0, 1])),
        }
    if spec.multiclass:
        return multiclass_metrics(y_true, y_score)
    return {
        "rmse": float(np.sqrt(m.mean_squared_error(y_true, y_score))),
        "mae": float(m.mean_absolute_error(y_true, y_score)),
        "r2": float(m.r2_score(y_true, y_score)),
    }


def multiclass_metrics(y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy, macro and weighted F1, log loss and macro one-vs-rest ROC AUC of codes
    `y_true` against a probability matrix (column i: class code i). The AUC averages the
    classes present in `y_true`: one-vs-rest is undefined for a class with no rows."""
    from sklearn import metrics as m

    k = probabilities.shape[1]
    clipped = np.clip(probabilities, 1e-7, 1.0)
    clipped = clipped / clipped.sum(axis=1, keepdims=True)
    present = [c for c in range(k) if (y_true == c).any() and not (y_true == c).all()]
    aucs = [m.roc_auc_score(y_true == c, probabilities[:, c]) for c in present]
    return label_metrics(y_true, probabilities.argmax(axis=1)) | {
        "log_loss": float(m.log_loss(y_true, clipped, labels=list(range(k)))),
        "roc_auc_ovr": float(np.mean(aucs)) if aucs else float("nan"),
    }


def label_metrics(y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """The multiclass metrics that labels alone define (what monitoring has: the prediction
    log keeps each row's predicted class, not its probabilities)."""
    from sklearn import metrics as m

    return {
        "accuracy": float(m.accuracy_score(y_true, predicted)),
        "f1_macro": float(m.f1_score(y_true, predicted, average="macro", zero_division=0)),
        "f1_weighted": float(m.f1_score(y_true, predicted, average="weighted", zero_division=0)),
    }


def per_class_recall(
    y_true: np.ndarray, probabilities: np.ndarray, classes: list[str]
) -> dict[str, float | None]:
    """Each class's recall (None: the class has no rows here, so its recall is undefined)."""
    predicted = probabilities.argmax(axis=1)
    return {
        label: float((predicted[y_true == code] == code).mean()) if (y_true == code).any() else None
        for code, label in enumerate(classes)
    }

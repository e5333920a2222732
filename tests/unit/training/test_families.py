"""The built-in families beyond LightGBM and the linear ones: XGBoost and CatBoost, each with
its own handling of categories, tuned from the spec's search space, logged as the training DAG
logs a pipeline (skops, signature, requirements) and scored by the model server as offline."""

from __future__ import annotations

import mlflow
import numpy as np
import optuna
import pytest
import yaml

from maestro import tracking
from maestro.data.synthetic import generate
from maestro.serving.scorer import load_scorer
from maestro.spec import load_spec
from maestro.training import tune
from maestro.training.families import build_estimator, fit
from maestro.training.stages import log_pipeline
from tests.support import PROJECT

SPACES = {
    "xgboost": {
        "n_estimators": {"type": "int", "low": 20, "high": 60},
        "max_depth": {"type": "int", "low": 2, "high": 6},
        "learning_rate": {"type": "float", "low": 0.05, "high": 0.3, "log": True},
    },
    "catboost": {
        "iterations": {"type": "int", "low": 20, "high": 60},
        "depth": {"type": "int", "low": 2, "high": 6},
    },
}


@pytest.fixture(scope="module")
def frame():
    data = generate(3000)
    data.loc[data.index[::50], "region"] = None  # missing categories are handled, not refused
    return data


def spec_for(tmp_path, family: str):
    raw = yaml.safe_load((PROJECT / "include" / "specs" / "demo.yaml").read_text())
    raw["search_space"] = {family: SPACES[family]}
    path = tmp_path / "demo.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


@pytest.mark.parametrize("family", ["xgboost", "catboost"])
def test_tuned_alone_logged_and_served_as_offline(tmp_path, settings, frame, family):
    spec = spec_for(tmp_path, family)
    train, valid, test = frame.iloc[:2000], frame.iloc[2000:2500], frame.iloc[2500:]
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(tune.make_objective(spec, train, valid), n_trials=2)
    assert all(t.params["family"] == family and t.value > 0.6 for t in study.trials)
    params = {
        k.removeprefix(f"{family}."): v
        for k, v in study.best_params.items()
        if k.startswith(f"{family}.")
    }
    X, y = train[spec.feature_names], train[spec.target.name].to_numpy()
    model = fit(build_estimator(spec, family, params), spec, family, X, y)
    unknown = test[spec.feature_names].head(30).assign(plan="platinum")  # never seen in training
    offline = model.predict_proba(unknown)[:, 1]

    tracking.use_tracking(settings)
    with mlflow.start_run(experiment_id=tracking.experiment_id(settings, "demo")):
        logged = log_pipeline(model, spec, X.dropna().head(5))
    version = str(mlflow.register_model(logged.model_uri, "demo").version)
    requirements = mlflow.artifacts.load_text(f"models:/demo/{version}/requirements.txt")
    assert ("xgboost-cpu==" if family == "xgboost" else "catboost==") in requirements
    scorer = load_scorer("demo", version)
    table = {
        c.name: [None if v != v else v for v in unknown[c.name].tolist()] for c in scorer.columns
    }
    np.testing.assert_allclose(scorer.score(table), offline, rtol=1e-6)

"""Your own training code, as a new user writes it: a package of trainer functions beside the
project, named by a spec. Tuned like a built-in family, logged with its code so it loads where
the project is not, scored by the model server's generic path; and bad code fails with one
line naming the spec and the function."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import yaml

from maestro import tracking
from maestro.config import Settings
from maestro.data.synthetic import generate
from maestro.models import load_version, scores
from maestro.serving.records import columns_of
from maestro.serving.scorer import is_classifier, load_scorer
from maestro.spec import check_trainers, load_spec
from maestro.training import custom, tune
from tests.support import PROJECT

TRAINERS = '''
"""A team's trainers: their own model class around scikit-learn's histogram boosting."""
import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier


class ChurnModel:
    """Categories as codes of the training split's values, then boosting."""

    def __init__(self, features, categorical, max_iter, learning_rate):
        self.features, self.categorical = features, categorical
        self.booster = HistGradientBoostingClassifier(
            max_iter=max_iter, learning_rate=learning_rate, random_state=0
        )

    def _encode(self, frame):
        out = frame[self.features].copy()
        for name in self.categorical:
            out[name] = pd.Categorical(out[name], categories=self.levels[name]).codes
        return out.astype(float)

    def fit(self, frame, y):
        self.levels = {n: sorted(frame[n].dropna().unique()) for n in self.categorical}
        self.booster.fit(self._encode(frame), y)
        return self

    def predict_proba(self, frame):
        return self.booster.predict_proba(self._encode(frame))


def train(context):
    model = ChurnModel(
        context.features,
        context.spec.categorical_features,
        int(context.params["max_iter"]),
        float(context.params["learning_rate"]),
    )
    model.fit(context.train, context.train[context.target])
    context.report(0, context.validation_metric(model.predict_proba(context.valid)[:, 1]))
    return model


def raises(context):
    raise RuntimeError("the GPU is on fire")


def wrong_kind(context):
    return {"weights": [1, 2, 3]}


class Constant:
    def __init__(self, values):
        self.values = values

    def predict_proba(self, frame):
        return np.tile(self.values, (len(frame), 1))


def nan_predictions(context):
    return Constant([np.nan, np.nan])


def three_columns(context):
    return Constant([0.2, 0.3, 0.5])
'''


@pytest.fixture
def user_project(tmp_path, monkeypatch):
    """A package `acme_trainers` outside the project, importable, allowed by the settings."""
    package = tmp_path / "acme" / "acme_trainers"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "churn.py").write_text(textwrap.dedent(TRAINERS))
    (package / "broken.py").write_text("import a_module_nobody_installed\n")
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setenv("MAESTRO_TRAINER_PACKAGES", "acme_trainers")
    yield package
    for name in [m for m in sys.modules if m.startswith("acme_trainers")]:
        del sys.modules[name]


def spec_with(tmp_path: Path, function: str, **space) -> object:
    raw = yaml.safe_load((PROJECT / "include" / "specs" / "demo.yaml").read_text())
    raw["trainers"] = {"hgb": {"function": function}}
    raw["search_space"] = {"hgb": space}
    path = tmp_path / "specs" / "demo.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


SPACE = {
    "max_iter": {"type": "int", "low": 20, "high": 60},
    "learning_rate": {"type": "float", "low": 0.05, "high": 0.3, "log": True},
}


@pytest.fixture(scope="module")
def splits():
    frame = generate(3000)
    return frame.iloc[:2000], frame.iloc[2000:2500], frame.iloc[2500:]


def test_a_trainer_is_tuned_like_a_family_and_its_trials_report_their_curve(
    user_project, tmp_path, splits
):
    spec = spec_with(tmp_path, "acme_trainers.churn:train", **SPACE)
    check_trainers(spec, Settings())
    train, valid, _ = splits
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0))
    study.optimize(tune.make_objective(spec, train, valid), n_trials=3)
    assert all(t.params["family"] == "hgb" for t in study.trials)
    assert all(0.6 < t.value <= 1.0 for t in study.trials), [t.value for t in study.trials]
    assert all(t.intermediate_values[0] == t.value for t in study.trials)  # what it reported
    assert {t.params["hgb.max_iter"] for t in study.trials} <= set(range(20, 61))


def test_the_logged_model_carries_its_code_and_is_served_by_the_generic_path(
    user_project, tmp_path, splits, settings, monkeypatch
):
    spec = spec_with(tmp_path, "acme_trainers.churn:train", **SPACE)
    train, valid, test = splits
    params = {"max_iter": 40, "learning_rate": 0.1}
    model = custom.train(spec, "hgb", custom.TrainingContext(train, valid, params, spec))
    example = train[spec.feature_names].head(5)
    tracking.use_tracking(settings)
    with mlflow.start_run(experiment_id=tracking.experiment_id(settings, "demo")):
        logged = custom.log_model(spec, "hgb", model, example, ["scikit-learn"])
    version = mlflow.register_model(logged.model_uri, "demo").version
    offline = model.predict_proba(test[spec.feature_names])[:, 1]

    # the project's trainers are gone: the model loads from the code logged with it
    for name in [m for m in sys.modules if m.startswith("acme_trainers")]:
        del sys.modules[name]
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p != str(user_project.parent)])
    loaded = load_version(f"models:/demo/{version}")
    assert type(loaded).__module__ == "acme_trainers.churn"
    np.testing.assert_allclose(scores(loaded, spec, test[spec.feature_names]), offline)

    scorer = load_scorer("demo", str(version))
    assert scorer.classification and scorer.path == "pipeline"
    rows = test[spec.feature_names].head(20)
    table = {c.name: rows[c.name].tolist() for c in scorer.columns}
    np.testing.assert_allclose(scorer.score(table), offline[:20])


def test_a_python_model_is_logged_as_pyfunc_and_served_with_its_task(tmp_path, settings):
    """Any pyfunc model with a columnar signature: the server learns the task from the
    metadata Maestro logs, or, for a model from elsewhere, from its output signature."""
    from mlflow.models import Model, infer_signature

    class Halves(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            positive = np.clip(model_input["age"].to_numpy() / 100.0, 0, 1)
            return np.column_stack([1 - positive, positive])

    frame = generate(50)
    example = frame[["age", "plan"]].head(5)
    tracking.use_tracking(settings)
    with mlflow.start_run(experiment_id=tracking.experiment_id(settings, "demo")):
        output = Halves().predict(None, example)
        logged = mlflow.pyfunc.log_model(
            name="model",
            python_model=Halves(),
            signature=infer_signature(example, output),
            input_example=example,
        )
    version = mlflow.register_model(logged.model_uri, "elsewhere").version
    meta = Model.load(mlflow.artifacts.download_artifacts(f"models:/elsewhere/{version}"))
    assert is_classifier(meta, None)  # two columns of probabilities, no Maestro metadata
    scorer = load_scorer("elsewhere", str(version))
    assert (scorer.path, scorer.fallback) == ("python_model", None)  # its predict, checked
    assert [c.name for c in scorer.columns] == [c.name for c in columns_of(meta.signature)]
    answer = scorer.score({"age": [30, 80], "plan": ["basic", "plus"]})
    np.testing.assert_allclose(answer, [0.3, 0.8])


@pytest.mark.parametrize(
    ("function", "expected"),
    [
        (
            "acme_trainers.broken:train",
            "demo: trainer 'hgb' (acme_trainers.broken:train): importing 'acme_trainers.broken' "
            "failed: ModuleNotFoundError: No module named 'a_module_nobody_installed'",
        ),
        (
            "acme_trainers.churn:missing",
            "demo: trainer 'hgb' (acme_trainers.churn:missing): module 'acme_trainers.churn' has "
            "no function 'missing'",
        ),
        (
            "acme_trainers.churn:raises",
            "(acme_trainers.churn:raises): training failed: RuntimeError: the GPU is on fire",
        ),
        (
            "acme_trainers.churn:wrong_kind",
            "returned a dict, which is neither a fitted model with a predict_proba() method nor "
            "an mlflow.pyfunc.PythonModel",
        ),
        (
            "acme_trainers.churn:nan_predictions",
            "(acme_trainers.churn:nan_predictions): 500 of 500 predictions are NaN or infinite",
        ),
        (
            "acme_trainers.churn:three_columns",
            "predictions for 500 rows have shape (500, 3); expected one probability per class",
        ),
    ],
)
def test_bad_training_code_fails_the_trial_with_one_line_naming_spec_and_function(
    user_project, tmp_path, splits, function, expected
):
    spec = spec_with(tmp_path, function)
    train, valid, _ = splits
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    with pytest.raises(custom.TrainerError) as info:
        tune._run_trial(study, tune.make_objective(spec, train, valid), trial)
    assert expected in str(info.value)
    assert study.trials[0].state == optuna.trial.TrialState.FAIL  # not left running

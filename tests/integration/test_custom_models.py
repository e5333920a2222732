"""Any model through the whole platform: a new user's spec and trainer, and the shipped PyTorch
spec, each trained by the real training DAG (`dag.test()`: GX, Feast, Optuna, MLflow, gates,
model card, approval), promoted, and answering requests from `maestro serve` over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from maestro import registry, tracking
from maestro.config import get_settings
from maestro.models import load_version, scores
from maestro.spec import get_spec
from tests.integration.test_serving import server
from tests.integration.test_training_dag import assert_traceable_challenger, run_training
from tests.support import needs_torch

pytestmark = pytest.mark.slow

TRAINER = '''
"""Gradient boosting the team already had, behind the trainer contract."""
from sklearn.ensemble import HistGradientBoostingClassifier


def train(context):
    model = HistGradientBoostingClassifier(
        max_iter=int(context.params["max_iter"]),
        learning_rate=float(context.params["learning_rate"]),
        categorical_features="from_dtype",
        random_state=context.seed,
    )
    frame = context.train[context.features].astype(
        {name: "category" for name in context.spec.categorical_features}
    )
    return CategoriesAsSeen(model.fit(frame, context.train[context.target]), context)


class CategoriesAsSeen:
    """Gives the model its categories with the training split's levels, whatever it is sent."""

    def __init__(self, model, context):
        self.model, self.features = model, context.features
        self.levels = {
            name: sorted(context.train[name].dropna().unique())
            for name in context.spec.categorical_features
        }

    def predict_proba(self, frame):
        import pandas as pd

        frame = frame[self.features].copy()
        for name, levels in self.levels.items():
            frame[name] = pd.Categorical(frame[name], categories=levels)
        return self.model.predict_proba(frame)
'''


# the trainers' flow is under test, not the fairness of 6,000 rows and three trials (a gate
# each failed by a hair once): the four-fifths rule is relaxed, as a team may
RELAXED_GOVERNANCE = {
    "latency_budget_ms": 500,
    "fairness": {
        "demographic_parity_difference_max": 0.1,
        "equalized_odds_difference_max": 0.15,
        "selection_rate_ratio_min": 0.6,
    },
}


def answered(target, model: str, rows: list[dict]) -> dict:
    status, body = target.request("POST", f"/v1/models/{model}/predict", rows)
    assert status == 200, body
    return json.loads(body)


def promoted_and_served(
    settings, model: str, dag_run, while_served: Callable | None = None, **env: str
) -> Any:
    """The run's version passed its gates and is promoted, its card names the trainer, and the
    model server answers with it what the registered model answers offline; then
    `while_served(target, spec, test rows not sent yet)` runs against the same server, and what
    it returns is returned once the server has stopped (its log written)."""
    assert dag_run.state == "success"
    result = assert_traceable_challenger(model, settings, dag_run)
    spec = get_spec(model, settings)
    mlc = tracking.client(settings)
    tags = mlc.get_model_version(model, result["version"]).tags
    assert tags["validation_status"] == "passed", tags["validation_failed"]
    registry.promote(settings, model, result["version"], "admin")  # as `maestro promote` does
    version = mlc.get_model_version_by_alias(model, "champion")
    assert version.tags["best_family"] in spec.trainers
    card = mlflow.artifacts.load_text(version.tags["model_card"].replace(".html", ".md"))
    assert f"`{spec.trainers[version.tags['best_family']].function}`" in card
    assert "(model-agnostic)" in card  # permutation importance: no exact SHAP for own code

    local = mlflow.artifacts.download_artifacts(
        run_id=version.tags["pipeline_run_id"], artifact_path="training_set"
    )
    full_test = pd.read_parquet(f"{local}/test.parquet")
    test = full_test.head(20)
    offline = scores(load_version(f"models:/{model}/{version.version}"), spec, test)
    rows = json.loads(test[spec.feature_names].to_json(orient="records"))
    env = {"MAESTRO_SPECS_DIR": str(settings.specs_dir), **env}
    with server(settings.home, model, **env) as (_, target):
        answer = answered(target, model, rows)
        sent = while_served(target, spec, full_test.iloc[20:]) if while_served else None
    assert answer["version"] == str(version.version)
    served = answer["predictions"]
    np.testing.assert_allclose(np.asarray(served, dtype=float), offline, rtol=1e-6)
    loads_without_the_platform(f"models:/{model}/{version.version}", settings, rows)
    return sent


def loads_without_the_platform(uri: str, settings, rows: list[dict]) -> None:
    """The model loads and answers in a process where `maestro` cannot be imported, as in
    MLServer or another team's service."""
    script = (
        "import sys; sys.modules['maestro'] = None\n"
        "import mlflow, pandas as pd\n"
        f"model = mlflow.pyfunc.load_model({uri!r})\n"
        "print(len(model.predict(pd.read_json(sys.stdin, orient='records'))))\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": settings.tracking_uri}
    env["MLFLOW_REGISTRY_URI"] = settings.tracking_uri
    done = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(rows),
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == str(len(rows))


def test_a_new_users_spec_and_trainer_go_from_training_to_an_answered_request(
    use_specs, tmp_path, monkeypatch
):
    """Written as a new user would: a package of their own, a spec naming its function, data
    the project has not seen (the demo generator with another seed), nothing else changed."""
    package = tmp_path / "team" / "team_models"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "boosting.py").write_text(textwrap.dedent(TRAINER))
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setenv("MAESTRO_TRAINER_PACKAGES", "trainers,team_models")
    settings = use_specs(
        {
            "demo": {
                "source": {"rows": 6000, "seed": 11},
                "trainers": {"hgb": {"function": "team_models.boosting:train"}},
                "governance": RELAXED_GOVERNANCE,
            }
        }
    )
    path = settings.specs_dir / "demo.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["search_space"] = {  # the trainer alone
        "hgb": {
            "max_iter": {"type": "int", "low": 30, "high": 80},
            "learning_rate": {"type": "float", "low": 0.02, "high": 0.1},
        }
    }
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    dag_run = run_training("demo", settings, trials=3)
    # the server has neither the team's package on its path nor in its packages: the model
    # loads from the code logged with it
    for name in [m for m in sys.modules if m.startswith("team_models")]:
        del sys.modules[name]
    promoted_and_served(settings, "demo", dag_run, MAESTRO_TRAINER_PACKAGES="trainers")


def test_the_pytorch_spec_is_trained_gated_and_served_as_a_pyfunc_model(use_specs):
    needs_torch()
    settings = use_specs(
        {
            "churn_mlp": {
                "source": {"rows": 6000},
                "governance": RELAXED_GOVERNANCE,
            }
        }
    )
    dag_run = run_training("churn_mlp", settings, trials=3)
    version = tracking.client(settings).get_model_version_by_alias("churn_mlp", "challenger")
    meta = mlflow.models.Model.load(
        mlflow.artifacts.download_artifacts(f"models:/churn_mlp/{version.version}")
    )
    assert "python_function" in meta.flavors and "sklearn" not in meta.flavors
    requirements = mlflow.artifacts.load_text(
        f"models:/churn_mlp/{version.version}/requirements.txt"
    )
    assert "torch==2.13.0" in requirements
    traffic = promoted_and_served(settings, "churn_mlp", dag_run, send_traffic_and_labels)
    judged_as_any_champion(settings, get_spec("churn_mlp", settings), traffic)
    get_settings.cache_clear()


def send_traffic_and_labels(target, spec, traffic: pd.DataFrame) -> pd.DataFrame:
    """Production traffic answered in three requests, then every row's label by request id."""
    traffic = traffic.head(300)
    feedback = []
    for start in range(0, len(traffic), 100):
        part = traffic.iloc[start : start + 100]
        rows = json.loads(part[spec.feature_names].to_json(orient="records"))
        answer = answered(target, spec.name, rows)
        feedback += [
            {"request_id": answer["request_id"], "row": i, "label": int(label)}
            for i, label in enumerate(part[spec.target.name])
        ]
    status, body = target.request("POST", f"/v1/models/{spec.name}/feedback", feedback)
    assert status == 200 and json.loads(body)["accepted"] == len(traffic), body
    return traffic


def judged_as_any_champion(settings, spec, traffic: pd.DataFrame) -> None:
    """The monitoring job judges the network from the prediction log and the labels: the rows
    logged, their labels, and the AUC the network really had on them."""
    from sklearn.metrics import roc_auc_score

    from maestro.monitoring import stages as monitoring

    version = tracking.client(settings).get_model_version_by_alias(spec.name, "champion")
    verdict = monitoring.judge(spec.name, settings)
    assert verdict.version == str(version.version)
    assert verdict.rows == 20 + len(traffic) and verdict.labels == len(traffic)
    offline = scores(load_version(f"models:/{spec.name}/{version.version}"), spec, traffic)
    truth = traffic[spec.target.name].astype(int)
    assert verdict.performance["roc_auc"] == pytest.approx(roc_auc_score(truth, offline))
    assert verdict.prediction_drift is not None and verdict.drift_share is not None
    mlc = tracking.client(settings)
    artifacts = {a.path for a in mlc.list_artifacts(verdict.run_id, "monitoring")}
    assert {"monitoring/drift.html", "monitoring/quality.html"} <= artifacts

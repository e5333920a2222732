"""Multiclass classification through the platform, on the shipped `forest_cover` spec (UCI
Covertype, seven very imbalanced classes): the real training DAG tunes, gates and explains it,
the card shows every class, and the model server answers labels with each class's probability
in both protocols, as the registered model does offline; batch scoring writes them too."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest

from maestro import registry, tracking
from maestro.models import CLASSES_METADATA, load_version, predicted_labels, scores
from maestro.monitoring import stages as monitoring
from maestro.serving.batch import score_partition
from maestro.spec import get_spec
from maestro.waiting import wait_for
from tests.integration.test_serving import server
from tests.integration.test_training_dag import assert_traceable_challenger, run_training
from tests.support import needs_shared_data

pytestmark = pytest.mark.slow

CLASSES = ["1", "2", "3", "4", "5", "6", "7"]


def v2_request(test: pd.DataFrame, names: list[str]) -> dict:
    return {
        "id": "cells",
        "inputs": [
            {"name": n, "datatype": "INT64", "shape": [len(test)], "data": test[n].tolist()}
            for n in names
        ],
    }


def traffic_with_feedback(target, spec, traffic: pd.DataFrame) -> dict:
    """Answer `traffic` in three requests, then send every row's true class by name (and one
    label that is no class)."""
    sent = []
    for start in range(0, len(traffic), 100):
        part = traffic.iloc[start : start + 100]
        rows = json.loads(part[spec.feature_names].to_json(orient="records"))
        status, body = target.request("POST", "/v1/models/forest_cover/predict", rows)
        assert status == 200, body
        request_id = json.loads(body)["request_id"]
        sent += [
            {"request_id": request_id, "row": i, "label": CLASSES[code]}
            for i, code in enumerate(part[spec.target.name])
        ]
    sent.append({"request_id": sent[0]["request_id"], "label": "pine"})
    status, body = target.request("POST", "/v1/models/forest_cover/feedback", sent)
    assert status == 200, body
    return json.loads(body)


def predicted_class_counts(target) -> dict[str, int]:
    """Rows per predicted class, from the server's /metrics (what the dashboard's class mix
    panel reads)."""
    from prometheus_client.parser import text_string_to_metric_families

    status, body = target.request("GET", "/metrics")
    assert status == 200, body
    counts: dict[str, int] = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "maestro_predicted_class_total":
                label = sample.labels["class"]
                counts[label] = counts.get(label, 0) + int(sample.value)
    return counts


def test_forest_cover_is_trained_judged_per_class_and_served_with_its_labels(use_specs):
    needs_shared_data("covtype.csv")
    settings = use_specs({"forest_cover": {"governance": {"latency_budget_ms": 500}}})
    dag_run = run_training("forest_cover", settings, trials=3)
    assert dag_run.state == "success"
    result = assert_traceable_challenger("forest_cover", settings, dag_run)
    assert result["metric"] > 0.6  # macro F1 over seven classes, the rarest with 8 test rows
    spec = get_spec("forest_cover", settings)
    mlc = tracking.client(settings)
    version = mlc.get_model_version("forest_cover", result["version"])
    assert version.tags["validation_status"] == "passed", version.tags["validation_failed"]
    meta = mlflow.models.Model.load(
        mlflow.artifacts.download_artifacts(f"models:/forest_cover/{version.version}")
    )
    assert meta.metadata[CLASSES_METADATA] == CLASSES
    card = mlflow.artifacts.load_text(version.tags["model_card"].replace(".html", ".md"))
    assert "## Classes" in card
    for label in CLASSES:
        assert f"\n| {label} | " in card, label  # a row per class: recall and top features
    for metric in ("f1_macro", "f1_weighted", "roc_auc_ovr", "log_loss", "accuracy"):
        assert f"| {metric} |" in card, metric
    assert "SHAP\\| per class, averaged" in card  # the card escapes its bars

    registry.promote(settings, "forest_cover", result["version"], "admin")
    local = mlflow.artifacts.download_artifacts(
        run_id=version.tags["pipeline_run_id"], artifact_path="training_set"
    )
    full_test = pd.read_parquet(f"{local}/test.parquet")
    test = full_test.head(30)
    offline = scores(load_version(f"models:/forest_cover/{version.version}"), spec, test)
    assert offline.shape == (30, 7)
    rows = json.loads(test[spec.feature_names].to_json(orient="records"))
    env = {"MAESTRO_SPECS_DIR": str(settings.specs_dir)}
    with server(settings.home, "forest_cover", **env) as (_, target):
        status, body = target.request("POST", "/v1/models/forest_cover/predict", rows)
        assert status == 200, body
        answer = json.loads(body)
        status, body = target.request(
            "POST", "/v2/models/forest_cover/infer", v2_request(test, spec.feature_names)
        )
        assert status == 200, body
        v2 = json.loads(body)
        status, body = target.request("GET", "/v2/models/forest_cover")
        metadata = json.loads(body)
        bad = v2_request(test, spec.feature_names) | {"outputs": [{"name": "scores"}]}
        refused, why = target.request("POST", "/v2/models/forest_cover/infer", bad)
        traffic = full_test.iloc[30:330]
        feedback = traffic_with_feedback(target, spec, traffic)
        class_mix = wait_for(
            lambda: (
                (found := predicted_class_counts(target)) and sum(found.values()) >= 360 and found
            ),
            timeout=30,
            interval=0.2,
            what="the predicted-class counters to count the 360 rows answered",
        )
    assert answer["predictions"] == predicted_labels(offline, CLASSES)
    served = np.array([[row[label] for label in CLASSES] for row in answer["probabilities"]])
    np.testing.assert_allclose(served, offline, rtol=1e-9)
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert outputs["predictions"]["datatype"] == "BYTES"
    assert outputs["predictions"]["data"] == answer["predictions"]
    assert outputs["probabilities"]["shape"] == [30, 7]
    assert outputs["probabilities"]["parameters"]["classes"] == CLASSES
    np.testing.assert_allclose(
        np.reshape(outputs["probabilities"]["data"], (30, 7)), offline, rtol=1e-9
    )
    assert [o["name"] for o in metadata["outputs"]] == ["predictions", "probabilities"]
    assert refused == 422 and "'predictions' and 'probabilities'" in why.decode()

    assert feedback["accepted"] == 300
    assert [r["reason"] for r in feedback["refused"]] == [
        "label must be one of the classes ['1', '2', '3', '4', '5', '6', '7'], got 'pine'"
    ]
    # monitoring: the predicted class mix against the champion's on its training rows, and
    # the quality of the answered requests from their labels
    verdict = monitoring.judge("forest_cover", settings)
    assert verdict.rows == 360 and verdict.labels == 300  # 30 + 30 rows answered before
    truth = traffic[spec.target.name].to_numpy()
    offline_traffic = scores(load_version(f"models:/forest_cover/{version.version}"), spec, traffic)
    expected = (offline_traffic.argmax(axis=1) == truth).mean()
    assert verdict.performance["accuracy"] == pytest.approx(expected)
    answered = np.concatenate([offline, offline, offline_traffic]).argmax(axis=1)
    counts = np.bincount(answered, minlength=7)
    assert class_mix == {CLASSES[k]: int(n) for k, n in enumerate(counts)}
    assert verdict.prediction_drift is not None
    artifacts = {a.path for a in mlc.list_artifacts(verdict.run_id, "monitoring")}
    assert {"monitoring/drift.html", "monitoring/quality.html"} <= artifacts

    day = pd.Timestamp(test["event_timestamp"].iloc[0]).strftime("%Y-%m-%d")
    written = score_partition(settings, "forest_cover", day)
    batch = pd.read_parquet(written["output"])
    assert set(batch["prediction"]) <= set(CLASSES)
    probabilities = batch[[f"probability_{label}" for label in CLASSES]].to_numpy()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-9)

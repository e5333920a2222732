"""Multiclass classification, piece by piece, on cases whose right answer is known: the spec,
the target's classes, the metrics, the per-class and fairness gates, SHAP per class and the
server's answers in both protocols."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from maestro.config import Settings
from maestro.data.sources import DataError, encode_classes
from maestro.governance.explain import column_contributions, shap_importance
from maestro.governance.gates import class_recall_checks, evaluate_challenger, fairness_checks
from maestro.serving import v2
from maestro.serving.inference import logged_predictions, records_answer
from maestro.spec import SpecError, get_spec, load_spec
from maestro.training.families import build_estimator, fit, multiclass_metrics, per_class_recall

CLASSES = ["1", "2", "3", "4", "5", "6", "7"]


@pytest.fixture(scope="module")
def cover():
    return get_spec("forest_cover", Settings())


def spec_text(**changes: object) -> dict:
    """The shipped forest_cover spec with `a__b=value` changes (nested keys)."""
    import yaml

    raw = yaml.safe_load((Settings().specs_dir / "forest_cover.yaml").read_text())
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = raw
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
    return raw


def parsed(raw: dict, folder) -> object:
    import yaml

    path = folder / f"{raw['name']}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return load_spec(path)


def refusal(raw: dict, folder) -> str:
    with pytest.raises(SpecError) as found:
        parsed(raw, folder)
    return str(found.value)


def test_a_multiclass_spec_takes_only_its_own_metrics_and_fields(tmp_path):
    wrong_metric = spec_text(metric={"name": "roc_auc", "direction": "maximize"})
    assert "does not fit task 'multiclass_classification'" in refusal(wrong_metric, tmp_path)
    binary_threshold = spec_text(governance__thresholds={"f1": {"min": 1}})
    assert "governance.thresholds" in refusal(binary_threshold, tmp_path)
    positive = spec_text(target__positive="2")
    assert "only a binary target has a positive class" in refusal(positive, tmp_path)
    binary = spec_text(task="binary_classification", metric={"name": "f1", "direction": "maximize"})
    binary["governance"]["thresholds"] = {}
    binary["monitoring"]["performance"] = {}
    assert "only a multiclass target lists its classes" in refusal(binary, tmp_path)
    assert "needs at least 2 entries" in refusal(spec_text(target__classes=["1"]), tmp_path)


def test_labels_become_their_place_in_the_declared_classes(cover, tmp_path):
    codes = encode_classes(pd.Series(["7", "1", "4"]), cover, "covtype.csv")
    assert codes.tolist() == [6, 0, 3]  # the spec's list: a class absent here keeps its code
    undeclared = spec_text()
    del undeclared["target"]["classes"]
    assert "a multiclass target lists its classes" in refusal(undeclared, tmp_path)
    repeated = spec_text(target__classes=["1", "2", "1"])
    assert "repeats a class" in refusal(repeated, tmp_path)


def test_a_label_outside_the_classes_or_a_single_class_is_one_clear_error(cover):
    with pytest.raises(DataError, match=r"covtype.csv: .* labels \['9'\] that are not in"):
        encode_classes(pd.Series(["1", "9"]), cover, "covtype.csv")
    with pytest.raises(DataError, match="has 1 class \\['2'\\] .* needs at least two"):
        encode_classes(pd.Series(["2", "2"]), cover, "covtype.csv")


def test_metrics_match_their_definitions_and_an_absent_class_is_undefined():
    y = np.array([0, 0, 1, 1, 2, 2])
    p = np.array(
        [
            [0.8, 0.1, 0.1, 0.0],
            [0.2, 0.7, 0.1, 0.0],
            [0.1, 0.8, 0.1, 0.0],
            [0.1, 0.6, 0.3, 0.0],
            [0.1, 0.1, 0.8, 0.0],
            [0.3, 0.3, 0.4, 0.0],
        ]
    )
    found = multiclass_metrics(y, p)
    assert found["accuracy"] == pytest.approx(5 / 6)
    assert found["log_loss"] == pytest.approx(
        -np.mean(np.log(np.clip([0.8, 0.2, 0.8, 0.6, 0.8, 0.4], 1e-7, 1))), rel=1e-5
    )
    assert 0 < found["f1_macro"] < 1 and found["roc_auc_ovr"] > 0.5
    recall = per_class_recall(y, p, ["a", "b", "c", "d"])
    assert recall == {"a": 0.5, "b": 1.0, "c": 1.0, "d": None}
    checks = class_recall_checks(
        get_spec("forest_cover", Settings()).model_copy(
            update={
                "governance": get_spec("forest_cover", Settings()).governance.model_copy(
                    update={"min_class_recall": 0.6}
                )
            }
        ),
        recall,
    )
    assert [c.name for c in checks if not c.passed] == ["class_recall:a", "class_recall:d"]
    assert checks[3].detail == "no rows of this class in the test split"


def test_fairness_is_judged_one_class_against_the_rest_on_the_worst_class(cover):
    xyz = cover.model_copy(
        update={"target": cover.target.model_copy(update={"classes": ["x", "y", "z"]})}
    )
    rows = 3000
    rng = np.random.default_rng(0)
    groups = pd.Series(np.array(["a", "b"] * (rows // 2)))
    y = rng.integers(0, 3, rows)
    p = np.eye(3)[y] * 0.8 + 0.2 / 3  # right for everyone ...
    fair_values, fair = fairness_checks(xyz, "area", y, p, groups)
    assert all(c.passed for c in fair), fair
    biased = p.copy()
    chosen = (groups == "b").to_numpy() & (y == 0)  # ... but class x is never chosen for b
    biased[chosen] = [0.1, 0.8, 0.1]
    values, checks = fairness_checks(xyz, "area", y, biased, groups)
    failed = {c.name for c in checks if not c.passed}
    assert "fairness:area:equalized_odds_difference" in failed
    assert values["equalized_odds_difference"] == pytest.approx(1.0)
    assert "worst for class x" in checks[0].detail


def test_lightgbm_shap_values_add_up_to_each_class_margin_and_the_card_gets_a_column_each(
    tmp_path,
):
    from sklearn.datasets import make_classification

    X, y = make_classification(600, 5, n_informative=4, n_redundant=0, n_classes=3, random_state=0)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    raw = spec_text(
        features=[{"name": f"f{i}", "type": "float"} for i in range(5)],
        governance__slices=[],
        target__classes=["x", "y", "z"],
    )
    spec = parsed(raw, tmp_path)
    model = build_estimator(spec, "lightgbm", {"n_estimators": 30, "num_leaves": 8})
    fit(model, spec, "lightgbm", frame, y)
    per_class = column_contributions(model, "lightgbm", frame.head(50))
    margins = model[-1].booster_.predict(frame.head(50), raw_score=True)
    bias = model[-1].booster_.predict(frame.head(50), pred_contrib=True).reshape(50, 3, 6)[:, :, -1]
    for k, contributions in enumerate(per_class):
        np.testing.assert_allclose(contributions.sum(axis=1) + bias[:, k], margins[:, k], rtol=1e-6)
    table = shap_importance(model, spec, "lightgbm", frame.head(200), y[:200])
    assert {"class x", "class y", "class z", "importance"} <= set(table.columns)
    np.testing.assert_allclose(
        table["importance"], table[["class x", "class y", "class z"]].mean(axis=1)
    )
    result = evaluate_challenger(
        spec,
        frame.head(200).assign(**{spec.target.name: y[:200]}),
        model.predict_proba(frame.head(200)),
        None,
    )
    assert set(result["per_class_recall"]) == {"x", "y", "z"}
    assert result["undefined_classes"] == []


def test_answers_carry_labels_and_every_class_probability_in_both_protocols():
    p = np.array([[0.2, 0.7, 0.1], [0.5, 0.2, 0.3]])
    answer = records_answer(p, ["x", "y", "z"])
    assert answer["predictions"] == ["y", "x"]
    assert answer["probabilities"][1] == {"x": 0.5, "y": 0.2, "z": 0.3}
    assert records_answer(np.array([0.3, 0.9]), None) == {"predictions": [0.3, 0.9]}
    body = json.loads(v2.infer_response("m", "1", "r", None, p, ["x", "y", "z"]))
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["predictions"] == {
        "name": "predictions",
        "datatype": "BYTES",
        "shape": [2],
        "data": ["y", "x"],
    }
    assert outputs["probabilities"]["shape"] == [2, 3]
    assert outputs["probabilities"]["data"] == [0.2, 0.7, 0.1, 0.5, 0.2, 0.3]
    # the prediction log keeps the predicted class's index, one float per row
    assert np.frombuffer(logged_predictions(p, ["x", "y", "z"])).tolist() == [1.0, 0.0]


def test_feedback_labels_are_class_names_and_an_unknown_one_is_refused(cover):
    from maestro.logs.labels import parse_label

    assert parse_label("4", cover) == 3.0
    assert parse_label(7, cover) == 6.0  # a number as JSON sends it is its name
    with pytest.raises(ValueError, match=r"one of the classes \['1', .*got '8'"):
        parse_label("8", cover)
    with pytest.raises(ValueError, match="got True"):
        parse_label(True, cover)

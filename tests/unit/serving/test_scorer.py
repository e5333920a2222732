"""The server's fast scoring paths against the pipelines they stand in for: the same
predictions one row at a time and in batches (large enough to take several threads), with
missing values and a category the model never saw."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from mlflow.models import infer_signature

from maestro.config import Settings
from maestro.data.synthetic import generate
from maestro.serving.fast_paths import PARALLEL_ROWS
from maestro.serving.records import Column, columns_of, to_columns
from maestro.serving.scorer import Scorer
from maestro.spec import get_spec
from maestro.training.families import build_estimator, fit
from maestro.waiting import wait_for


@pytest.fixture(scope="module")
def demo():
    spec = get_spec("demo", Settings())
    frame = generate(3000)
    return spec, frame[spec.feature_names], frame[spec.target.name].to_numpy()


def requests(X: pd.DataFrame, rows: int) -> list[dict]:
    """The last `rows` rows as JSON-like records, with a missing number, a missing category
    and an unseen category among them."""
    records = [
        {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for r in X.tail(rows).to_dict("records")
    ]
    records[0]["income"] = None
    records[1]["region"] = None
    records[2]["region"] = "atlantis"
    return records


def pipeline_scores(pipeline, records: list[dict], numeric: list[str]) -> np.ndarray:
    frame = pd.DataFrame(records).astype({name: "float64" for name in numeric})
    return pipeline.predict_proba(frame)[:, 1]


@pytest.mark.parametrize(
    ("family", "params", "path"),
    [
        ("lightgbm", {"n_estimators": 60, "num_leaves": 15}, "booster"),
        ("xgboost", {"n_estimators": 40, "max_depth": 4}, "xgboost"),
        ("catboost", {"iterations": 40, "depth": 4}, "catboost"),
        ("logistic_regression", {"C": 1.0}, "linear"),
    ],
)
def test_the_fast_path_scores_exactly_like_the_pipeline(demo, family, params, path):
    spec, X, y = demo
    pipeline = fit(build_estimator(spec, family, params), spec, family, X, y)
    example = X.head(5)
    signature = infer_signature(example, pipeline.predict_proba(example))
    columns = [Column(c.name, c.kind, False) for c in columns_of(signature)]  # nulls allowed
    scorer = Scorer("demo", "1", pipeline, columns, example, threads=2)
    assert scorer.path == path

    records = requests(X, PARALLEL_ROWS + 50)
    numeric = [c.name for c in columns if c.kind in ("number", "integer")]
    expected = pipeline_scores(pipeline, records, numeric)
    batch = scorer.score(to_columns(records, columns))
    np.testing.assert_allclose(batch, expected, rtol=1e-9, atol=1e-12)
    for record, want in zip(records[:25], expected[:25], strict=True):
        one = scorer.score(to_columns([record], columns))
        assert one.shape == (1,)
        np.testing.assert_allclose(one[0], want, rtol=1e-9, atol=1e-12)


def test_a_fast_path_that_cannot_be_checked_is_refused_and_said(demo, caplog):
    """Without an input example the fast path cannot be checked against the pipeline: the
    version is scored by its pipeline, and the log and `fallback` say why."""
    spec, X, y = demo
    pipeline = fit(build_estimator(spec, "lightgbm", {"n_estimators": 20}), spec, "lightgbm", X, y)
    signature = infer_signature(X.head(5), pipeline.predict_proba(X.head(5)))
    columns = [Column(c.name, c.kind, False) for c in columns_of(signature)]
    with caplog.at_level("WARNING", logger="maestro.serving"):
        scorer = Scorer("demo", "7", pipeline, columns, None)
    assert scorer.path == "pipeline"
    assert scorer.fallback == "no input example to check the booster path against"
    assert "demo version 7 is scored by its pipeline" in caplog.text
    records = requests(X, 3)
    numeric = [c.name for c in columns if c.kind in ("number", "integer")]
    np.testing.assert_allclose(
        scorer.score(to_columns(records, columns)), pipeline_scores(pipeline, records, numeric)
    )


def compiled(forest) -> str:
    """The forest's state once it is no longer compiling."""
    return wait_for(
        lambda: forest.state != "compiling" and forest.state,
        timeout=120,
        interval=0.05,
        what="the forest was still compiling",
    )


def test_batches_move_to_the_compiled_forest_once_it_is_built_and_checked(demo, tmp_path):
    """The first large batch is scored by the booster and has the trees compiled in the
    background; later batches are scored by the compiled trees, exactly as by the pipeline.
    A second scorer of the same model (a restarted server, a sibling worker) finds the compiled
    forest in the cache instead of compiling it again; another model gets its own."""
    spec, X, y = demo
    params = {"n_estimators": 60, "num_leaves": 15}
    pipeline = fit(build_estimator(spec, "lightgbm", params), spec, "lightgbm", X, y)
    example = X.head(5)
    signature = infer_signature(example, pipeline.predict_proba(example))
    columns = [Column(c.name, c.kind, False) for c in columns_of(signature)]
    records = requests(X, PARALLEL_ROWS + 50)
    numeric = [c.name for c in columns if c.kind in ("number", "integer")]
    expected = pipeline_scores(pipeline, records, numeric)
    cache = tmp_path / "forests"

    scorer = Scorer("demo", "1", pipeline, columns, example, threads=2, forests=cache)
    assert scorer.forest.state == "not compiled"
    scorer.score(to_columns(records[:5], columns))  # a small batch does not start it
    assert scorer.forest.state == "not compiled"
    first = scorer.score(to_columns(records, columns))
    assert scorer.forest.state == "compiling"
    np.testing.assert_allclose(first, expected, rtol=1e-9, atol=1e-12)
    assert compiled(scorer.forest) == "ready"
    for batch in (records, records[:7]):  # once ready, small batches use it too
        np.testing.assert_allclose(
            scorer.score(to_columns(batch, columns)), expected[: len(batch)], rtol=1e-9, atol=1e-12
        )
    binaries = sorted(p.name for p in cache.glob("*.o"))
    assert len(binaries) == 1

    again = Scorer("demo", "2", pipeline, columns, example, threads=1, forests=cache)
    again.score(to_columns(records, columns))
    assert compiled(again.forest) == "ready"
    assert sorted(p.name for p in cache.glob("*.o")) == binaries

    params = {"n_estimators": 30, "num_leaves": 7}
    other = fit(build_estimator(spec, "lightgbm", params), spec, "lightgbm", X, y)
    third = Scorer("demo", "3", other, columns, example, threads=1, forests=cache)
    third.score(to_columns(records, columns))
    assert compiled(third.forest) == "ready"
    assert len(list(cache.glob("*.o"))) == 2
    np.testing.assert_allclose(
        third.score(to_columns(records, columns)),
        pipeline_scores(other, records, numeric),
        rtol=1e-9,
        atol=1e-12,
    )


@pytest.mark.parametrize(
    ("family", "params", "path"),
    [
        ("lightgbm", {"n_estimators": 40, "num_leaves": 15}, "booster"),
        ("xgboost", {"n_estimators": 30, "max_depth": 4}, "xgboost"),
        ("catboost", {"iterations": 30, "depth": 4}, "catboost"),
        ("logistic_regression", {"C": 1.0}, "linear"),
    ],
)
def test_multiclass_fast_paths_answer_every_class_probability_like_the_pipeline(
    demo, family, params, path, tmp_path
):
    """A three-class model: LightGBM's booster (and its compiled forest), XGBoost's and
    CatBoost's paths and the linear one (one sum per class, then a softmax) answer the
    pipeline's probability matrix, a row per request row
    and a column per class, one row at a time and in batches."""
    spec, X, _ = demo
    y = np.digitize(X["balance"].fillna(0), np.quantile(X["balance"].fillna(0), [1 / 3, 2 / 3]))
    pipeline = fit(build_estimator(spec, family, params), spec, family, X, y)
    example = X.head(5)
    signature = infer_signature(example, pipeline.predict_proba(example))
    columns = [Column(c.name, c.kind, False) for c in columns_of(signature)]
    scorer = Scorer(
        "demo", "1", pipeline, columns, example, 2, tmp_path, True, classes=["lo", "mid", "hi"]
    )
    assert scorer.path == path

    records = requests(X, PARALLEL_ROWS + 50)
    numeric = [c.name for c in columns if c.kind in ("number", "integer")]
    expected = pipeline.predict_proba(pd.DataFrame(records).astype(dict.fromkeys(numeric, float)))
    assert expected.shape == (len(records), 3)
    np.testing.assert_allclose(scorer.score(to_columns(records, columns)), expected, rtol=1e-9)
    for record, want in zip(records[:25], expected[:25], strict=True):
        one = scorer.score(to_columns([record], columns))
        assert one.shape == (1, 3)
        np.testing.assert_allclose(one[0], want, rtol=1e-9, atol=1e-12)
    if scorer.forest is not None:
        assert compiled(scorer.forest) == "ready"
        np.testing.assert_allclose(
            scorer.score(to_columns(records, columns)), expected, rtol=1e-9, atol=1e-12
        )


@pytest.mark.parametrize(
    ("family", "path"),
    [("lightgbm", "booster"), ("xgboost", "xgboost"), ("catboost", "catboost")],
)
def test_a_model_without_categories_gets_its_fast_path_too(demo, family, path):
    """Numbers only (UCI Covertype's kind): the pipeline's encoder of no columns is left
    unfitted, and is no reason to refuse the fast path."""
    spec, X, y = demo
    numbers = spec.model_copy(
        update={"features": [f for f in spec.features if f.type != "category"]}
    )
    X = X[numbers.feature_names]
    pipeline = fit(build_estimator(numbers, family, {}), numbers, family, X, y)
    signature = infer_signature(X.head(5), pipeline.predict_proba(X.head(5)))
    columns = [Column(c.name, c.kind, False) for c in columns_of(signature)]
    scorer = Scorer("demo", "1", pipeline, columns, X.head(5))
    assert (scorer.path, scorer.fallback) == (path, None)
    records = json.loads(X.tail(50).to_json(orient="records"))
    records[0]["income"] = None
    expected = pipeline_scores(pipeline, records, numbers.feature_names)
    np.testing.assert_allclose(scorer.score(to_columns(records, columns)), expected, rtol=1e-9)
    one = scorer.score(to_columns(records[:1], columns))
    np.testing.assert_allclose(one, expected[:1], rtol=1e-9, atol=1e-12)


def test_a_binary_model_on_its_pipeline_answers_a_v2_batch(demo):
    """A random forest has no fast path: its P(positive) is a column of the pipeline's
    probability matrix, which the V2 answer serialises for every row of a batch."""
    import orjson

    from maestro.serving import v2

    spec, X, y = demo
    params = {"n_estimators": 10}
    pipeline = fit(build_estimator(spec, "random_forest", params), spec, "random_forest", X, y)
    example = X.head(5)
    signature = infer_signature(example, pipeline.predict_proba(example))
    columns = [Column(c.name, c.kind, False) for c in columns_of(signature)]
    scorer = Scorer("demo", "1", pipeline, columns, example)
    assert scorer.path == "pipeline"
    records = requests(X, 40)
    scores = scorer.score(to_columns(records, columns))
    answer = orjson.loads(v2.infer_response("demo", "1", "r", None, scores))
    numeric = [c.name for c in columns if c.kind in ("number", "integer")]
    expected = pipeline_scores(pipeline, records, numeric)
    np.testing.assert_allclose(answer["outputs"][0]["data"], expected, rtol=1e-12)

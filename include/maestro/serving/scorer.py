"""A registered version, ready to score fast the columns `records` checked against its
signature.

LightGBM pipelines (ordinal categories, numeric passthrough) are scored by the booster on one
float matrix: the scikit-learn pipeline spends about 0.4 ms per call in pandas, the booster
about 0.04 ms. XGBoost and CatBoost pipelines are scored by their own models on the rows as
they take them, and linear ones as a sum of terms read off the pipeline; multiclass models
answer every class's probability on each path. A fast path is used only when it matches the
pipeline on the version's input example at load; anything else is scored by the pipeline
itself, or, for a model that is not scikit-learn (a trainer's PythonModel, any MLflow model
with a columnar signature), by its pyfunc `predict`.
"""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from maestro.models import (
    CLASSES_METADATA,
    TASK_METADATA,
    load_version,
    output_scores,
)
from maestro.serving.fast_paths import (
    booster_scorer,
    catboost_scorer,
    linear_scorer,
    python_model_scorer,
    xgboost_scorer,
)
from maestro.serving.forest import CompiledForest
from maestro.serving.records import Column, RequestError, columns_of

log = logging.getLogger("maestro.serving")


class Scorer:
    """Scores columns with a model version: P(positive) for binary classifiers, a probability
    matrix (a column per class of `classes`) for multiclass ones, values for regressors."""

    def __init__(
        self,
        model: str,
        version: str,
        pipeline: Any,
        columns: list[Column],
        example: Any,
        threads: int = 1,
        forests: Path | None = None,
        classification: bool | None = None,
        classes: list[str] | None = None,
    ) -> None:
        self.model, self.version = model, version
        self.columns = columns
        self.names = tuple(c.name for c in columns)
        self.pipeline = pipeline
        # a pyfunc model says its task in its metadata (see load_scorer); a scikit-learn one
        # by whether it has predict_proba
        self.classification = (
            hasattr(pipeline, "predict_proba") if classification is None else classification
        )
        self.classes = classes  # multiclass: what each probability column stands for
        self.path, self._fast = "pipeline", None
        self.fallback: str | None = None  # why a fast path that was built is not used
        label = f"{model} version {version}"
        builders = (
            ("booster", partial(booster_scorer, threads=threads, forests=forests, label=label)),
            ("xgboost", xgboost_scorer),
            ("catboost", partial(catboost_scorer, threads=threads)),
            ("linear", linear_scorer),
            ("python_model", partial(python_model_scorer, frame=self._frame, classes=classes)),
        )
        for path, build in builders:
            try:
                fast = build(pipeline, columns, self.classification)
                if fast is None:
                    continue  # not this kind of pipeline
                if example is None:
                    self.fallback = f"no input example to check the {path} path against"
                elif self._agrees(fast, example):
                    self.path, self._fast, self.fallback = path, fast, None
                    break
                else:
                    self.fallback = f"the {path} path disagrees with the pipeline"
            except Exception as error:  # noqa: BLE001 - the pipeline itself is the reference
                self.fallback = f"the {path} path failed: {type(error).__name__}: {error}"
        self.forest: CompiledForest | None = getattr(self._fast, "forest", None)
        if self.fallback:
            log.warning(
                "%s version %s is scored by its pipeline (slower): %s",
                model,
                version,
                self.fallback,
            )

    def score(self, table: dict[str, list]) -> np.ndarray:
        """The scores, contiguous in memory: a probability matrix's positive column is a strided
        view, which the answers' serialiser (orjson) refuses."""
        scores = self._fast(table) if self._fast is not None else self._score_pipeline(table)
        return np.ascontiguousarray(scores)

    def _agrees(self, fast: Any, example: Any) -> bool:
        """Whether the fast path answers as the pipeline: on the example, on its first row
        alone (single rows may take another way), and on that row with its text columns null
        or never seen, then its numbers null (where the pipeline takes those)."""
        table = {c.name: [None if _is_nan(v) else v for v in example[c.name]] for c in self.columns}
        one = {name: values[:1] for name, values in table.items()}
        text = [c.name for c in self.columns if c.kind == "string"]
        numbers = [c.name for c in self.columns if c.kind in ("number", "integer")]
        probes = [
            one | {name: [None] for name in text},
            one | {name: ["\x00unseen"] for name in text},
            one | {name: [None] for name in numbers},
        ]
        checks = [(table, self._score_pipeline(table)), (one, self._score_pipeline(one))]
        for probe in probes:
            try:
                checks.append((probe, self._score_pipeline(probe)))
            except Exception:  # noqa: BLE001 - a probe the model refuses checks nothing
                continue
        return all(np.allclose(fast(t), want, rtol=1e-7, atol=1e-9) for t, want in checks)

    def _frame(self, table: dict[str, list]) -> Any:
        """The columns as the model's frame: numbers as float64 (null: NaN); for a pyfunc
        model, whole integer columns as int64 (it enforces its schema: a long column takes no
        floats)."""
        import pandas as pd

        pyfunc = not hasattr(self.pipeline, "steps") and not hasattr(self.pipeline, "predict_proba")
        data: dict[str, Any] = {}
        for column in self.columns:  # typed arrays first: a frame's astype per column is slow
            values: Any = table[column.name]
            if column.kind in ("number", "integer"):
                values = np.array(values, dtype=np.float64)
                if pyfunc and column.kind == "integer" and not np.isnan(values).any():
                    values = values.astype(np.int64)
            data[column.name] = values
        return pd.DataFrame(data)  # in column order already: `columns=` costs 0.16 ms a call

    def _score_pipeline(self, table: dict[str, list]) -> np.ndarray:
        frame = self._frame(table)
        if self.classification and hasattr(self.pipeline, "predict_proba"):
            probabilities = self.pipeline.predict_proba(frame)
            return probabilities if self.classes is not None else probabilities[:, 1]
        return output_scores(self._predict(frame), self.classification, self.classes is not None)

    def _predict(self, frame: Any) -> Any:
        """The model's own predict; a pyfunc model's refusal of the input is the request's
        fault (422), not the server's."""
        from mlflow.exceptions import MlflowException

        try:
            return self.pipeline.predict(frame)
        except MlflowException as error:
            raise RequestError(422, f"the model refused the input: {error.message}") from error


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def example_rows(model: str, version: str) -> list[dict]:
    """The version's logged input example as JSON records (what smoke tests send)."""
    import mlflow
    from mlflow.models import Model

    local = mlflow.artifacts.download_artifacts(f"models:/{model}/{version}")
    example: Any = Model.load(local).load_input_example(local)
    return json.loads(example.to_json(orient="records"))  # NaN -> null


def load_scorer(model: str, version: str, threads: int = 1, forests: Path | None = None) -> Scorer:
    """Download and load `models:/<model>/<version>` from the configured MLflow registry;
    `threads` for scoring large batches; `forests`, a cache folder for compiled forests (see
    `maestro.serving.forest`; None: batches stay on the booster)."""
    import mlflow
    from mlflow.models import Model

    local = mlflow.artifacts.download_artifacts(f"models:/{model}/{version}")
    meta = Model.load(local)
    if meta.signature is None:
        raise ValueError(f"{model} version {version} has no signature: cannot validate input")
    example = None
    if meta.saved_input_example_info:
        example = meta.load_input_example(local)
    pipeline = load_version(local)
    columns = columns_of(meta.signature)
    classification = is_classifier(meta, pipeline)
    classes = (meta.metadata or {}).get(CLASSES_METADATA)
    scorer = Scorer(
        model, str(version), pipeline, columns, example, threads, forests, classification, classes
    )
    if example is not None:
        check_one_score_per_row(scorer, example)
    return scorer


def check_one_score_per_row(scorer: Scorer, example: Any) -> None:
    """Refuse, at load, a version whose answers the protocols cannot express: anything but one
    finite score per row of its own input example (multiclass: one probability per class)."""
    table = {c.name: [None if _is_nan(v) else v for v in example[c.name]] for c in scorer.columns}
    answer = np.asarray(scorer.score(table))
    rows, classes = len(example), scorer.classes
    wanted = (rows,) if classes is None else (rows, len(classes))
    if answer.shape != wanted:
        needs = (
            "one score per row (P(positive) for a classifier, a value otherwise)"
            if classes is None
            else f"one probability for each of its {len(classes)} classes per row"
        )
        raise ValueError(
            f"{scorer.model} version {scorer.version} answers shape {answer.shape} for the "
            f"{rows} rows of its input example: the server needs {needs}; it cannot be served"
        )


def is_classifier(meta: Any, model: Any) -> bool:
    """Whether a version answers P(positive): the task Maestro logged it for, else (a model
    from elsewhere) a scikit-learn predict_proba, or a signature whose output is two columns
    or a tensor of two per row (class probabilities)."""
    task = (meta.metadata or {}).get(TASK_METADATA)
    if task is not None:
        return bool(task != "regression")
    if hasattr(model, "predict_proba"):
        return True
    outputs = meta.signature.outputs
    if outputs is None:
        return False
    shapes = [getattr(spec, "shape", None) for spec in outputs.inputs]
    two_columns = len(outputs.inputs) == 2 and all(s is None for s in shapes)
    return two_columns or (len(shapes) == 1 and shapes[0] is not None and shapes[0][-1:] == (2,))

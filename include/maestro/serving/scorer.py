"""A registered version, ready to score fast the columns `records` checked against its
signature.

LightGBM pipelines (ordinal categories, numeric passthrough) are scored by the booster on one
float matrix: the scikit-learn pipeline spends about 0.4 ms per call in pandas, the booster
about 0.04 ms. The fast path is used only when it matches the pipeline on the version's input
example at load; anything else is scored by the pipeline itself, or, for a model that is not
scikit-learn (a trainer's PythonModel, any MLflow model with a columnar signature), by its
pyfunc `predict`.
"""

from __future__ import annotations

import json
import logging
import math
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from maestro.models import CLASSES_METADATA, TASK_METADATA, load_version, output_scores
from maestro.serving.forest import CompiledForest
from maestro.serving.records import Column, RequestError, columns_of

log = logging.getLogger("maestro.serving")
PARALLEL_ROWS = 200  # batches this large are scored on several threads


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
            ("booster", partial(_booster_scorer, threads=threads, forests=forests, label=label)),
            ("linear", _linear_scorer),
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
        return self._fast(table) if self._fast is not None else self._score_pipeline(table)

    def _agrees(self, fast: Any, example: Any) -> bool:
        table = {c.name: [None if _is_nan(v) else v for v in example[c.name]] for c in self.columns}
        one = {name: values[:1] for name, values in table.items()}  # single rows may differ
        return all(
            np.allclose(fast(t), self._score_pipeline(t), rtol=1e-7, atol=1e-9)
            for t in (table, one)
        )

    def _score_pipeline(self, table: dict[str, list]) -> np.ndarray:
        import pandas as pd

        frame = pd.DataFrame(table, columns=[c.name for c in self.columns])
        pyfunc = not hasattr(self.pipeline, "steps") and not hasattr(self.pipeline, "predict_proba")
        for column in self.columns:
            if column.kind in ("number", "integer"):
                frame[column.name] = frame[column.name].astype("float64")
            whole = column.kind == "integer" and not frame[column.name].isna().any()
            if pyfunc and whole:  # pyfunc enforces its schema: a long column takes no floats
                frame[column.name] = frame[column.name].astype("int64")
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


def _numeric(table: dict[str, list], names: list[str]) -> np.ndarray:
    """The named columns as one float matrix; null becomes NaN."""
    matrix = np.empty((len(table[names[0]]) if names else 0, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        matrix[:, j] = np.array(table[name], dtype=np.float64)
    return matrix


def _booster_scorer(
    pipeline: Any,
    columns: list[Column],
    classification: bool,
    threads: int,
    forests: Path | None,
    label: str,
) -> Any:
    """LightGBM behind numeric passthrough and ordinal categories: the booster on one matrix,
    with `threads` threads for batches of PARALLEL_ROWS rows or more (below that, waking the
    threads costs more than it saves). With a `forests` cache folder, the first batch of
    PARALLEL_ROWS rows or more has the trees compiled in the background; once compiled and
    checked, every batch is scored by them (`maestro.serving.forest`)."""
    from lightgbm import LGBMModel
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    steps = getattr(pipeline, "named_steps", {})
    prep, model = steps.get("prep"), steps.get("model")
    if not isinstance(prep, ColumnTransformer) or not isinstance(model, LGBMModel):
        return None
    numeric, categorical = [], []
    for name, transformer, cols in prep.transformers_:
        if name == "remainder" and transformer == "drop":
            continue
        identity = isinstance(transformer, FunctionTransformer) and transformer.func is None
        if transformer == "passthrough" or identity:  # a fitted passthrough is an identity
            numeric += list(cols)
        elif isinstance(transformer, OrdinalEncoder) and _unknown_and_missing_are_minus_one(
            transformer
        ):
            for col, categories in zip(cols, transformer.categories_, strict=True):
                codes = {c: float(i) for i, c in enumerate(categories) if isinstance(c, str)}
                categorical.append((col, codes))
        else:
            return None
    if [*numeric, *(c for c, _ in categorical)] != list(prep.get_feature_names_out()):
        return None
    booster = model.booster_
    n_numeric = len(numeric)
    one_row = SingleRowPredictor(booster, n_numeric + len(categorical))
    outputs = booster.num_model_per_iteration()  # multiclass: one probability per class
    forest = CompiledForest(booster, forests, threads, label) if forests else None

    def score(table: dict[str, list]) -> np.ndarray:
        n = len(table[columns[0].name])
        if n == 1:  # a list of the row's values: no per-column arrays for one number each
            row = [table[name][0] for name in numeric]
            row += [codes.get(table[name][0], -1.0) for name, codes in categorical]
            answer = one_row(row)
            return answer if outputs == 1 else answer.reshape(1, outputs)
        matrix = np.empty((n, n_numeric + len(categorical)), dtype=np.float64)
        matrix[:, :n_numeric] = _numeric(table, numeric)
        for j, (name, codes) in enumerate(categorical, start=n_numeric):
            matrix[:, j] = [codes.get(v, -1.0) for v in table[name]]
        if forest is not None and (n >= PARALLEL_ROWS or forest.state == "ready"):
            compiled = forest.predict(matrix)
            if compiled is not None:
                return compiled
        return np.asarray(booster.predict(matrix, num_threads=threads if n >= PARALLEL_ROWS else 1))

    score.forest = forest  # type: ignore[attr-defined]  # read by Scorer
    return score


class SingleRowPredictor:
    """LightGBM's C entry point for one row with its configuration prepared once
    (`LGBM_BoosterPredictForMatSingleRowFast`): `Booster.predict` spends about 30 us of Python
    per call around a prediction that takes a few. The row and result buffers and their C
    pointers are made once too; a lock keeps them and the configuration to one caller at a
    time (shadow scoring runs in a thread). It uses LightGBM's private `_LIB` and `_safe_call`:
    if an upgrade removes them, the booster path is refused at load and
    `tests/unit/test_scorer.py` fails (it requires the booster path)."""

    def __init__(self, booster: Any, n_features: int) -> None:
        import ctypes
        import threading

        from lightgbm.basic import _C_API_DTYPE_FLOAT64, _C_API_PREDICT_NORMAL, _LIB, _safe_call

        self._booster = booster  # keeps the handle alive
        self._lib, self._check = _LIB, _safe_call
        self._config = ctypes.c_void_p()
        _safe_call(
            _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                ctypes.c_int(_C_API_PREDICT_NORMAL),
                ctypes.c_int(0),  # from the first iteration
                ctypes.c_int(-1),  # to the best or last one, as Booster.predict does
                ctypes.c_int(_C_API_DTYPE_FLOAT64),
                ctypes.c_int32(n_features),
                ctypes.c_char_p(b"num_threads=1"),
                ctypes.byref(self._config),
            )
        )
        self._row = np.empty(n_features, dtype=np.float64)
        self._out = np.empty(booster.num_model_per_iteration(), dtype=np.float64)
        self._length = ctypes.c_int64(0)
        self._row_pointer = self._row.ctypes.data_as(ctypes.c_void_p)
        self._out_pointer = self._out.ctypes.data_as(ctypes.POINTER(ctypes.c_double))
        self._length_pointer = ctypes.byref(self._length)
        self._lock = threading.Lock()

    def __call__(self, values: list) -> np.ndarray:
        """The prediction for one row, given as its feature values in order (None: missing):
        one value, or a multiclass model's probability per class."""
        with self._lock:
            self._row[:] = values
            self._check(
                self._lib.LGBM_BoosterPredictForMatSingleRowFast(
                    self._config, self._row_pointer, self._length_pointer, self._out_pointer
                )
            )
            return self._out.copy()

    def __del__(self) -> None:
        self._lib.LGBM_FastConfigFree(self._config)


def _unknown_and_missing_are_minus_one(encoder: Any) -> bool:
    return (
        encoder.handle_unknown == "use_encoded_value"
        and encoder.unknown_value == -1
        and encoder.encoded_missing_value == -1
    )


def _linear_scorer(pipeline: Any, columns: list[Column], classification: bool) -> Any:
    """A linear model behind column-wise preprocessing (impute, scale, one-hot) is a sum of one
    term per input column: a slope per numeric column (and a term for its nulls), a term per
    category; a multiclass logistic regression has one such sum per class, and a softmax. The
    terms are read off the pipeline itself by scoring probe rows once."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression, Ridge

    model = getattr(pipeline, "named_steps", {}).get("model")
    prep = pipeline.named_steps.get("prep") if model is not None else None
    if not isinstance(model, LogisticRegression | Ridge) or prep is None:
        return None
    weights = np.atleast_2d(model.coef_).T  # features x (1, or one per class)
    bias = np.ravel(model.intercept_)
    if bias.size != weights.shape[1]:
        return None
    numeric = [c.name for c in columns if c.kind in ("number", "integer")]
    found = {c.name: _categories(prep, c.name) for c in columns if c.kind == "string"}
    categorical = {name: cats for name, cats in found.items() if cats is not None}
    if len(numeric) + len(found) != len(columns) or len(categorical) != len(found):
        return None
    base = {**dict.fromkeys(numeric, 0.0), **{n: cats[0] for n, cats in categorical.items()}}
    probes = [base]
    for name in numeric:
        probes += [{**base, name: 1.0}, {**base, name: None}]
    for name, cats in categorical.items():
        probes += [{**base, name: c} for c in [*cats, None, "\x00unknown"]]
    frame = pd.DataFrame(probes, columns=[c.name for c in columns])
    frame[numeric] = frame[numeric].astype("float64")
    decision = np.asarray(prep.transform(frame) @ weights + bias)  # probes x outputs
    origin, rest = decision[0], iter(decision[1:] - decision[0])
    slopes = np.empty((len(numeric), bias.size))
    null_terms = np.empty((len(numeric), bias.size))
    for j in range(len(numeric)):
        slopes[j], null_terms[j] = next(rest), next(rest)
    terms = {}
    for name, cats in categorical.items():
        values = [next(rest) for _ in range(len(cats) + 2)]
        terms[name] = (dict(zip([*cats, None], values, strict=False)), values[-1])

    def score(table: dict[str, list]) -> np.ndarray:
        x = _numeric(table, numeric)
        nulls = np.isnan(x)
        z = origin + np.where(nulls, 0.0, x) @ slopes + nulls @ null_terms
        for name, (by_value, unknown) in terms.items():
            z += np.array([by_value.get(v, unknown) for v in table[name]])
        if bias.size > 1:  # softmax over the classes
            e = np.exp(z - z.max(axis=1, keepdims=True))
            return e / e.sum(axis=1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-z[:, 0])) if classification else z[:, 0]

    return score


def _categories(prep: Any, column: str) -> list[str] | None:
    """The categories a fitted one-hot or ordinal encoder learned for `column`."""
    for _, transformer, cols in prep.transformers_:
        if column not in list(cols):
            continue
        encoder = transformer.steps[-1][1] if hasattr(transformer, "steps") else transformer
        if not hasattr(encoder, "categories_"):
            return None
        cats = encoder.categories_[list(cols).index(column)]
        return [c for c in cats if isinstance(c, str)]
    return None


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

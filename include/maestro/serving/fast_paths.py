"""The server's fast scoring paths, each built from a loaded version and checked by `Scorer`
against the version's own pipeline at load: LightGBM's booster (and compiled forest), XGBoost's
`inplace_predict`, CatBoost on row lists, a linear model as a sum of terms, a spec's own
PythonModel without pyfunc's schema enforcement. A builder returns None for a model it is
not for; each answers P(positive), every class's probability (multiclass) or values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from maestro.models import library, output_scores, python_model_predict
from maestro.serving.forest import CompiledForest
from maestro.serving.records import Column

PARALLEL_ROWS = 200  # batches this large are scored on several threads
CATEGORY_STRINGS = "maestro.training.families.category_strings"  # CatBoost's category step


def python_model_scorer(
    pipeline: Any,
    columns: list[Column],
    classification: bool,
    frame: Callable[[dict[str, list]], Any],
    classes: list[str] | None,
) -> Any:
    """A pyfunc model made of a PythonModel (a spec's own trainer's): its own `predict` on the
    frame, without pyfunc's schema enforcement around it (about 2.5 ms a call; the request was
    checked against the same signature already)."""
    from mlflow.exceptions import MlflowException

    unwrap = getattr(pipeline, "unwrap_python_model", None)
    if unwrap is None:
        return None
    try:
        model = unwrap()
    except MlflowException:  # a pyfunc model of another flavour
        return None

    predict = python_model_predict(model)

    def score(table: dict[str, list]) -> np.ndarray:
        return output_scores(predict(frame(table)), classification, classes is not None)

    return score


def _numeric(table: dict[str, list], names: list[str]) -> np.ndarray:
    """The named columns as one float matrix; null becomes NaN."""
    matrix = np.empty((len(table[names[0]]) if names else 0, len(names)), dtype=np.float64)
    for j, name in enumerate(names):
        matrix[:, j] = np.array(table[name], dtype=np.float64)
    return matrix


Codes = dict[str | None, float]  # a category (None: null) to the code its model takes


def _tree_layout(
    prep: Any, missing: float, categories: Any
) -> tuple[list[str], list[tuple[str, Codes]]] | None:
    """The numeric columns a tree pipeline's preprocessing passes through and, for each
    categorical one, its codes: an ordinal encoder's (unknown and missing as `missing`), or
    the value itself (`categories`, a fitted transformer that keeps them as strings: CatBoost's);
    None for any other preprocessing, or another column order."""
    from sklearn.compose import ColumnTransformer
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    if not isinstance(prep, ColumnTransformer):
        return None
    numeric: list[str] = []
    categorical: list[tuple[str, Codes]] = []
    for name, transformer, cols in prep.transformers_:
        if (name == "remainder" and transformer == "drop") or len(cols) == 0:
            continue  # nothing dropped, or no columns of this kind (left unfitted)
        identity = isinstance(transformer, FunctionTransformer) and transformer.func is None
        if transformer == "passthrough" or identity:  # a fitted passthrough is an identity
            numeric += list(cols)
        elif categories is not None and categories(transformer):
            categorical += [(col, {}) for col in cols]
        elif isinstance(transformer, OrdinalEncoder) and _unknown_and_missing_are(
            transformer, missing
        ):
            categorical += _ordinal_codes(transformer, list(cols))
        else:
            return None
    if [*numeric, *(c for c, _ in categorical)] != list(prep.get_feature_names_out()):
        return None
    return numeric, categorical


def _ordinal_codes(encoder: Any, cols: list[str]) -> list[tuple[str, Codes]]:
    """Each column's codes as the fitted encoder itself gives them, for every category and
    for null (a null seen in training is a category of its own)."""
    import pandas as pd

    known = [[c for c in found if isinstance(c, str)] for found in encoder.categories_]
    rows = max(len(values) for values in known) + 1
    probe = pd.DataFrame(
        {
            col: [*values, *[None] * (rows - len(values))]
            for col, values in zip(cols, known, strict=True)
        }
    )
    coded = np.asarray(encoder.transform(probe), dtype=np.float64)
    return [
        (
            col,
            {
                **dict(zip(values, coded[: len(values), j].tolist(), strict=True)),
                None: coded[-1, j],
            },
        )
        for j, (col, values) in enumerate(zip(cols, known, strict=True))
    ]


def _coded_matrix(
    table: dict[str, list], numeric: list[str], categorical: list[tuple[str, Codes]], missing: float
) -> np.ndarray:
    """The rows as the model's float matrix: numbers as they are (null: NaN), categories
    coded."""
    n = len(table[numeric[0] if numeric else categorical[0][0]])
    matrix = np.empty((n, len(numeric) + len(categorical)), dtype=np.float64)
    matrix[:, : len(numeric)] = _numeric(table, numeric)
    for j, (name, codes) in enumerate(categorical, start=len(numeric)):
        matrix[:, j] = [codes.get(v, missing) for v in table[name]]
    return matrix


def booster_scorer(
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

    steps = getattr(pipeline, "named_steps", {})
    model = steps.get("model")
    layout = _tree_layout(steps.get("prep"), -1.0, None)
    if not isinstance(model, LGBMModel) or layout is None:
        return None
    numeric, categorical = layout
    booster = model.booster_
    one_row = SingleRowPredictor(booster, len(numeric) + len(categorical))
    outputs = booster.num_model_per_iteration()  # multiclass: one probability per class
    forest = CompiledForest(booster, forests, threads, label) if forests else None

    def score(table: dict[str, list]) -> np.ndarray:
        n = len(table[columns[0].name])
        if n == 1:  # a list of the row's values: no per-column arrays for one number each
            row = [table[name][0] for name in numeric]
            row += [codes.get(table[name][0], -1.0) for name, codes in categorical]
            answer = one_row(row)
            return answer if outputs == 1 else answer.reshape(1, outputs)
        matrix = _coded_matrix(table, numeric, categorical, -1.0)
        if forest is not None and (n >= PARALLEL_ROWS or forest.state == "ready"):
            compiled = forest.predict(matrix)
            if compiled is not None:
                return compiled
        return np.asarray(booster.predict(matrix, num_threads=threads if n >= PARALLEL_ROWS else 1))

    score.forest = forest  # type: ignore[attr-defined]  # read by Scorer
    return score


def xgboost_scorer(pipeline: Any, columns: list[Column], classification: bool) -> Any:
    """XGBoost behind numeric passthrough and NaN-coded categories: the booster's
    `inplace_predict` on one float matrix (its categorical feature types kept from training),
    without the pipeline's pandas frames; binary: P(positive), multiclass: every class's."""
    steps = getattr(pipeline, "named_steps", {})
    model = steps.get("model")
    if library(model) != "xgboost":  # not imported for other models
        return None
    from xgboost import XGBModel

    layout = _tree_layout(steps.get("prep"), math.nan, None)
    if not isinstance(model, XGBModel) or layout is None:
        return None
    numeric, categorical = layout
    booster = model.get_booster()

    def score(table: dict[str, list]) -> np.ndarray:
        return np.asarray(
            booster.inplace_predict(_coded_matrix(table, numeric, categorical, math.nan))
        )

    return score


def catboost_scorer(
    pipeline: Any, columns: list[Column], classification: bool, threads: int
) -> Any:
    """CatBoost behind numeric passthrough and its category strings: the model on the rows as
    lists (numbers, then each category as its string, a null as `missing`, as the pipeline
    makes them), without the pipeline's pandas frames."""
    steps = getattr(pipeline, "named_steps", {})
    model = steps.get("model")
    if library(model) != "catboost":  # not imported for other models
        return None
    from catboost import CatBoost
    from sklearn.preprocessing import FunctionTransformer

    def strings(transformer: Any) -> bool:
        """Training's `category_strings` (known by name: serving does not import training;
        what it does is checked at load like any fast path)."""
        func = getattr(transformer, "func", None)
        name = f"{getattr(func, '__module__', '')}.{getattr(func, '__name__', '')}"
        return isinstance(transformer, FunctionTransformer) and name == CATEGORY_STRINGS

    layout = _tree_layout(steps.get("prep"), math.nan, strings)
    if not isinstance(model, CatBoost) or layout is None:
        return None
    numeric, categorical = layout
    names = [c for c, _ in categorical]
    kind = "Probability" if classification else "RawFormulaVal"

    def score(table: dict[str, list]) -> np.ndarray:
        n = len(table[columns[0].name])
        values: list[list[float | str]] = [
            [math.nan if v is None else float(v) for v in table[c]] for c in numeric
        ]
        values += [["missing" if v is None else str(v) for v in table[c]] for c in names]
        rows = [list(row) for row in zip(*values, strict=True)]
        answer = model.predict(
            rows, prediction_type=kind, thread_count=threads if n >= PARALLEL_ROWS else 1
        )
        answer = np.asarray(answer)
        return answer[:, 1] if classification and answer.shape[1] == 2 else answer

    return score


class SingleRowPredictor:
    """LightGBM's C entry point for one row with its configuration prepared once
    (`LGBM_BoosterPredictForMatSingleRowFast`): `Booster.predict` spends about 30 us of Python
    per call around a prediction that takes a few. The row and result buffers and their C
    pointers are made once too; a lock keeps them and the configuration to one caller at a
    time (shadow scoring runs in a thread). It uses LightGBM's private `_LIB` and `_safe_call`:
    if an upgrade removes them, the booster path is refused at load and
    `tests/unit/serving/test_scorer.py` fails (it requires the booster path)."""

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


def _unknown_and_missing_are(encoder: Any, code: float) -> bool:
    """Whether an ordinal encoder codes unknown and missing categories as `code` (NaN: NaN)."""

    def same(value: Any) -> bool:
        if math.isnan(code):
            return isinstance(value, float) and math.isnan(value)
        return bool(value == code)

    return (
        encoder.handle_unknown == "use_encoded_value"
        and same(encoder.unknown_value)
        and same(encoder.encoded_missing_value)
    )


def linear_scorer(pipeline: Any, columns: list[Column], classification: bool) -> Any:
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

"""A registered version, whatever its flavour, loaded and scored the one way the platform does.

Built-in families and trainers returning a scikit-learn-style object are logged with MLflow's
scikit-learn flavour and load as that object; anything else (a trainer's `PythonModel`, any
MLflow model with a columnar signature) loads as a pyfunc model. Scores are P(positive) for
binary classification, a probability matrix (one column per class, in the order of the
version's classes) for multiclass, and values for regression.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, cast

import numpy as np
import pandas as pd

from maestro.spec import ModelSpec

TASK_METADATA = "maestro_task"  # the task a version was trained for, in its MLmodel metadata
CLASSES_METADATA = "maestro_classes"  # a multiclass version's classes, in its probabilities' order


def load_version(uri: str) -> Any:
    """The model at `uri` (`models:/name/version`, `runs:/...`, a local folder)."""
    import mlflow
    from mlflow.models import Model

    local = mlflow.artifacts.download_artifacts(uri)
    if "sklearn" in Model.load(local).flavors:
        return mlflow.sklearn.load_model(local)
    return mlflow.pyfunc.load_model(local)


def library(model: Any) -> str:
    """The top-level package of a model's class (a pipeline's: its last step's)."""
    final = model[-1] if hasattr(model, "steps") else model
    return type(final).__module__.split(".")[0]


def raw_output(model: Any, spec: ModelSpec, features: pd.DataFrame) -> Any:
    """What the model answers for `features`, before it becomes scores (what its logged
    signature describes): class probabilities for classifiers, values for regressors."""
    import mlflow

    if isinstance(model, mlflow.pyfunc.PythonModel):
        return python_model_predict(model)(features)
    if spec.classification and hasattr(model, "predict_proba"):
        return model.predict_proba(features)
    return model.predict(features)


def python_model_predict(model: Any) -> Callable[[pd.DataFrame], Any]:
    """A PythonModel's `predict` on a frame, whichever form it has: `predict(context,
    model_input)`, or MLflow 3's `predict(model_input)` (told apart once: inspecting a
    signature costs a tenth of a single row's answer)."""
    import inspect

    parameters = list(inspect.signature(model.predict).parameters)
    if parameters and parameters[0] == "context":
        return partial(model.predict, None)
    return cast(Callable[[pd.DataFrame], Any], model.predict)


def output_scores(output: Any, classification: bool, multiclass: bool = False) -> np.ndarray:
    """Scores from a model's output: a binary classifier's probability matrix gives its last
    (positive) column; a multiclass one stays the matrix."""
    values = np.asarray(output.to_numpy() if hasattr(output, "to_numpy") else output, dtype=float)
    if multiclass:
        return values
    if classification and values.ndim == 2 and values.shape[1] == 2:
        return values[:, 1]
    if values.ndim == 2 and values.shape[1] == 1:
        return values[:, 0]
    return values


def scores(model: Any, spec: ModelSpec, features: pd.DataFrame) -> np.ndarray:
    """P(positive) (binary), class probabilities (multiclass) or predictions (regression) of a
    loaded or fitted model."""
    return output_scores(raw_output(model, spec, features), spec.classification, spec.multiclass)


def model_metadata(spec: ModelSpec) -> dict[str, Any]:
    """What a logged version says of itself: its task and, multiclass, its classes (what the
    server answers by, whatever the spec says later)."""
    classes = {CLASSES_METADATA: spec.classes} if spec.multiclass else {}
    return {TASK_METADATA: spec.task} | classes


def predicted_labels(probabilities: np.ndarray, classes: Sequence[str]) -> list[str]:
    """The most probable class of each row (the first, on a tie)."""
    names = np.asarray(classes, dtype=object)
    return names[np.argmax(probabilities, axis=1)].tolist()

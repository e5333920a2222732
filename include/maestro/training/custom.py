"""Your own training code: a spec's `trainers` name functions that the platform tunes, logs,
judges and serves like its built-in families. The contract is in the README ("Your own
training code"); `TrainingContext` is what a trainer receives.

A trainer returns either a fitted object with the scikit-learn API (`predict_proba` for
classification, binary or multiclass, `predict` for regression), logged with MLflow's scikit-learn flavour, or an
`mlflow.pyfunc.PythonModel`, logged as a pyfunc model. Either way its package goes into the
logged model (`code_paths`), so the model loads wherever Maestro runs, without the project.
Whatever goes wrong in the user's code is one `TrainerError` naming the spec and the function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from maestro.errors import BadInput
from maestro.spec import ModelSpec


class TrainerError(BadInput):
    """A spec's own trainer failed: the message names the spec, the trainer and what happened."""


@dataclass(frozen=True)
class TrainingContext:
    """What a trainer receives: the splits exactly as the feature service returned them (entity
    key, event time, features and target), the trial's hyperparameters drawn from the spec's
    search space, the spec, a seed, the threads it may use, and `report(step, value)` for
    intermediate values of the spec's metric on the validation split (`validation_metric`
    computes it; Optuna prunes an unpromising trial by raising `optuna.TrialPruned` from
    `report`, which the trainer lets through). A multiclass target arrives as codes
    0..k-1 standing for `classes`; the model answers one probability per class, in that order."""

    train: pd.DataFrame
    valid: pd.DataFrame
    params: dict[str, Any]
    spec: ModelSpec
    seed: int = 0
    threads: int = 1
    final: bool = False  # True for the fit whose model is registered (nothing is pruned then)
    report: Callable[[int, float], None] = field(default=lambda step, value: None)

    @property
    def features(self) -> list[str]:
        return self.spec.feature_names

    @property
    def target(self) -> str:
        return self.spec.target.name

    @property
    def classes(self) -> list[str]:
        """Multiclass: the label of each target code."""
        return self.spec.classes

    def validation_metric(self, scores: np.ndarray) -> float:
        """The spec's metric of `scores` (P(positive), or values) on the validation split: the
        value to `report`, in the direction the study optimises."""
        from maestro.training.families import evaluate

        truth = self.valid[self.target].to_numpy()
        return evaluate(self.spec, truth, np.asarray(scores, dtype=float))[self.spec.metric.name]


def _label(spec: ModelSpec, family: str) -> str:
    return f"{spec.name}: trainer {family!r} ({spec.trainers[family].function})"


def load_trainer(spec: ModelSpec, family: str) -> Callable[[TrainingContext], Any]:
    """The function `family` names, imported; TrainerError when it cannot be."""
    trainer = spec.trainers[family]
    try:
        module = importlib.import_module(trainer.module)
    except Exception as error:
        raise TrainerError(
            f"{_label(spec, family)}: importing {trainer.module!r} failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    function = getattr(module, trainer.attribute, None)
    if not callable(function):
        raise TrainerError(
            f"{_label(spec, family)}: module {trainer.module!r} has no function "
            f"{trainer.attribute!r}"
        )
    return function


def train(spec: ModelSpec, family: str, context: TrainingContext) -> Any:
    """Run the trainer and check what it returned: TrainerError for an exception in training
    (Optuna's pruning signal passes through) or a return value of the wrong kind."""
    import mlflow
    import optuna

    function = load_trainer(spec, family)
    try:
        model = function(context)
    except optuna.TrialPruned:
        raise
    except Exception as error:
        raise TrainerError(
            f"{_label(spec, family)}: training failed: {type(error).__name__}: {error}"
        ) from error
    wanted = "predict_proba" if spec.classification else "predict"
    if not isinstance(model, mlflow.pyfunc.PythonModel) and not callable(
        getattr(model, wanted, None)
    ):
        raise TrainerError(
            f"{_label(spec, family)}: returned a {type(model).__name__}, which is neither a "
            f"fitted model with a {wanted}() method nor an mlflow.pyfunc.PythonModel"
        )
    return model


def checked_scores(
    spec: ModelSpec,
    family: str,
    model: Any,
    features: pd.DataFrame,
) -> np.ndarray:
    """The trainer's model's scores on `features` (P(positive), class probabilities or
    values), checked: one finite number per row (multiclass: one per class, summing to 1), and
    probabilities within [0, 1]; TrainerError otherwise."""
    from maestro.models import scores

    try:
        values = scores(model, spec, features)
    except Exception as error:
        raise TrainerError(
            f"{_label(spec, family)}: predicting {len(features)} rows failed: "
            f"{type(error).__name__}: {error}"
        ) from error
    shape = (len(features), len(spec.classes)) if spec.multiclass else (len(features),)
    if values.shape != shape:
        raise TrainerError(
            f"{_label(spec, family)}: predictions for {len(features)} rows have shape "
            f"{values.shape}; {_expected_output(spec)}"
        )
    bad = int(np.count_nonzero(~np.isfinite(values)))
    if bad:
        raise TrainerError(
            f"{_label(spec, family)}: {bad} of {len(features)} predictions are NaN or infinite"
        )
    if spec.classification and (values.min() < 0 or values.max() > 1):
        raise TrainerError(
            f"{_label(spec, family)}: probabilities outside [0, 1] "
            f"(from {values.min():.4g} to {values.max():.4g})"
        )
    off = np.abs(values.sum(axis=1) - 1.0).max() if spec.multiclass else 0.0
    if off > 1e-4:
        raise TrainerError(
            f"{_label(spec, family)}: class probabilities of a row do not sum to 1 "
            f"(off by up to {off:.4g})"
        )
    return values


def _expected_output(spec: ModelSpec) -> str:
    if spec.multiclass:
        return "expected one probability per class per row (rows x classes)"
    if spec.classification:
        return "expected one probability per class per row (rows x 2) or P(positive) per row"
    return "expected one value per row"


def code_paths(spec: ModelSpec, family: str) -> list[str]:
    """The trainer's top-level package folder, copied into the logged model so it loads (its
    classes unpickle) without the project on the path."""
    top = importlib.import_module(spec.trainers[family].module.split(".")[0])
    folders = [Path(p) for p in getattr(top, "__path__", [])] or [Path(str(top.__file__))]
    return [str(folders[0])]


def log_model(
    spec: ModelSpec,
    family: str,
    model: Any,
    example: pd.DataFrame,
    requirements: list[str],
) -> Any:
    """Log the trainer's model into the active MLflow run, with signature, input example, pip
    requirements (the core's and the trainer's own) and its code."""
    import mlflow
    from mlflow.models import infer_signature

    from maestro.models import model_metadata, raw_output

    requirements = [*requirements, *spec.trainers[family].requirements]
    common = {
        "name": "model",
        "signature": infer_signature(example, raw_output(model, spec, example)),
        "input_example": example,
        "pip_requirements": requirements,
        "code_paths": code_paths(spec, family),
        "metadata": model_metadata(spec),
    }
    if isinstance(model, mlflow.pyfunc.PythonModel):
        return mlflow.pyfunc.log_model(python_model=model, **common)
    return mlflow.sklearn.log_model(
        model,
        serialization_format="cloudpickle",  # your own classes: skops trusts only known types
        pyfunc_predict_fn="predict_proba" if spec.classification else "predict",
        **common,
    )

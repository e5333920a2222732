"""The training set's split by time, and what a multiclass split must hold."""

from __future__ import annotations

import logging

import pandas as pd

from maestro.errors import BadInput
from maestro.spec import ModelSpec

log = logging.getLogger(__name__)


def split_by_time(frame: pd.DataFrame, spec: ModelSpec) -> dict[str, pd.DataFrame]:
    """Oldest rows train, then validation, newest test (frame is in time order)."""
    n = len(frame)
    n_test = max(1, int(n * spec.split.test))
    n_valid = max(1, int(n * spec.split.validation))
    n_train = n - n_valid - n_test
    if n_train < 1:
        raise BadInput(f"{spec.name}: {n} rows are too few to split into train/validation/test")
    return {
        "train": frame.iloc[:n_train],
        "valid": frame.iloc[n_train : n_train + n_valid],
        "test": frame.iloc[n_train + n_valid :],
    }


def check_class_coverage(spec: ModelSpec, splits: dict[str, pd.DataFrame]) -> None:
    """A class the training split lacks cannot be learnt: BadInput. One the validation or test
    split lacks cannot be evaluated there: said in the log (the card says it too)."""
    for name, part in splits.items():
        present = set(part[spec.target.name].unique())
        absent = [label for code, label in enumerate(spec.classes) if code not in present]
        if absent and name == "train":
            raise BadInput(
                f"{spec.name}: classes {absent} have no rows in the training split "
                f"({len(part)} rows): a model cannot learn them; widen the window or drop them"
            )
        if absent:
            log.warning(
                "%s: classes %s have no rows in the %s split: their metrics there are undefined",
                spec.name,
                absent,
                name,
            )

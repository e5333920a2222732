"""Evidently's own report of a monitoring run, for people: HTML to MLflow, and a snapshot in the
model's project of an Evidently workspace (`maestro up` serves it with the Evidently UI).

The verdict comes from `maestro.monitoring.drift` on the whole window; Evidently renders the same
tests on a sample of at most `SAMPLE_ROWS` rows per side, where its plots stay affordable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from maestro.spec import ModelSpec

SAMPLE_ROWS = 20_000
PREDICTION, TARGET, LABEL = "prediction", "target", "predicted_label"


def _sample(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sample(SAMPLE_ROWS, random_state=0) if len(frame) > SAMPLE_ROWS else frame


def _definition(spec: ModelSpec, with_target: bool) -> Any:
    from evidently import BinaryClassification, DataDefinition, MulticlassClassification, Regression

    numeric = [f.name for f in spec.features if f.type != "category"]
    categorical = list(spec.categorical_features)
    # a multiclass model's logged prediction is its predicted class (a code): a category
    (categorical if spec.multiclass else numeric).append(PREDICTION)
    tasks = {}
    if with_target and spec.multiclass:
        categorical.append(TARGET)
        tasks["classification"] = [
            MulticlassClassification(target=TARGET, prediction_labels=PREDICTION)
        ]
    elif with_target and spec.task == "regression":
        numeric.append(TARGET)
        tasks["regression"] = [Regression(target=TARGET, prediction=PREDICTION)]
    elif with_target:  # classes: the true one and the one predicted at the decision threshold
        categorical += [TARGET, LABEL]
        tasks["classification"] = [
            BinaryClassification(
                target=TARGET, prediction_labels=LABEL, prediction_probas=PREDICTION, pos_label=1
            )
        ]
    return DataDefinition(numerical_columns=numeric, categorical_columns=categorical, **tasks)


def _class_names(spec: ModelSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """A multiclass model's logged codes (prediction, target) as its class names, which
    Evidently counts as labels; other frames as they are."""
    if not spec.multiclass:
        return frame
    names = dict(enumerate(spec.classes))
    present = [c for c in (PREDICTION, TARGET) if c in frame.columns]
    return frame.assign(**{c: frame[c].astype(int).map(names) for c in present})


def drift_report(spec: ModelSpec, reference: pd.DataFrame, current: pd.DataFrame) -> Any:
    """Data drift preset over the features, and a summary of the predictions."""
    from evidently import Dataset, Report
    from evidently.presets import DataDriftPreset, ValueStats

    columns = [*spec.feature_names, PREDICTION]
    definition = _definition(spec, with_target=False)
    report = Report(
        [
            DataDriftPreset(columns=spec.feature_names, drift_share=spec.monitoring.drift.share),
            ValueStats(column=PREDICTION),
        ]
    )
    current, reference = (_class_names(spec, _sample(f[columns])) for f in (current, reference))
    return report.run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
        name=f"{spec.name} drift",
    )


def quality_report(spec: ModelSpec, reference: pd.DataFrame, labelled: pd.DataFrame) -> Any:
    """The classification or regression preset on labelled production rows against the
    reference (the training rows and the champion's predictions of them)."""
    from evidently import Dataset, Report
    from evidently.presets import ClassificationPreset, RegressionPreset

    columns = [*spec.feature_names, PREDICTION, TARGET]
    if spec.task == "regression":
        preset = RegressionPreset()
    elif spec.multiclass:  # the logged predicted class against the true one, by name
        preset = ClassificationPreset()
        labelled, reference = (_class_names(spec, f) for f in (labelled, reference))
    else:  # labels at the spec's decision threshold, as the gates count them
        preset = ClassificationPreset()
        columns.append(LABEL)
        threshold = spec.governance.decision_threshold
        labelled, reference = (
            frame.assign(
                **{
                    LABEL: (frame[PREDICTION] >= threshold).astype(int),
                    TARGET: frame[TARGET].astype(int),
                }
            )
            for frame in (labelled, reference)
        )
    definition = _definition(spec, with_target=True)
    return Report([preset]).run(
        Dataset.from_pandas(_sample(labelled[columns]), data_definition=definition),
        Dataset.from_pandas(_sample(reference[columns]), data_definition=definition),
        name=f"{spec.name} quality",
    )


def add_to_workspace(workspace: Path, model: str, snapshots: list) -> str:
    """Add snapshots to the model's project (created on first use); returns the project id."""
    from evidently.ui.workspace import Workspace

    ws = Workspace(str(workspace))
    found = ws.search_project(model)
    project = found[0] if found else ws.create_project(model, description=f"Monitoring of {model}")
    for snapshot in snapshots:
        ws.add_run(project.id, snapshot)
    return str(project.id)

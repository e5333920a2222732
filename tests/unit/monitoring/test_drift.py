"""The drift engine against Evidently's own data drift preset (the same test per column, the
same scores, the same verdicts), on UCI Adult as it is and with two columns shifted, and on
the demo's drift knob."""

from __future__ import annotations

import pandas as pd
import pytest

from maestro.config import get_settings
from maestro.data.synthetic import generate, traffic
from maestro.monitoring.drift import dataset_drift
from maestro.spec import get_spec
from maestro.spec.sections import DriftSpec
from tests.support import needs_shared_data


def evidently_drift(reference, current, numeric, categorical) -> dict[str, tuple[float, str]]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(current, data_definition=definition),
        Dataset.from_pandas(reference, data_definition=definition),
    )
    return {
        m["config"]["column"]: (m["value"], m["config"]["method"])
        for m in snapshot.dict()["metrics"]
        if m["config"]["type"].endswith("ValueDrift")
    }


@pytest.fixture(scope="module")
def adult() -> tuple[pd.DataFrame, list[str], list[str]]:
    frame = pd.read_csv(needs_shared_data("adult.csv"), na_values=["?"], skipinitialspace=True)
    frame.columns = [c.replace("-", "_") for c in frame.columns]
    spec = get_spec("adult_income", get_settings())
    numeric = [f.name for f in spec.features if f.type != "category"]
    return frame, numeric, spec.categorical_features


def shifted(frame: pd.DataFrame) -> pd.DataFrame:
    """Fifteen years older, and the sex mix reversed."""
    return frame.assign(
        age=frame["age"] + 15, sex=frame["sex"].map({"Male": "Female", "Female": "Male"})
    )


@pytest.mark.parametrize("reference_rows", [30000, 800], ids=["distances", "p-values"])
@pytest.mark.parametrize("shift", [False, True], ids=["as-is", "shifted"])
def test_same_scores_and_verdicts_as_evidentlys_preset(adult, reference_rows, shift):
    frame, numeric, categorical = adult
    reference = frame.iloc[:reference_rows]
    current = frame.iloc[30000:32000]
    current = shifted(current) if shift else current
    ours = dataset_drift(reference, current, numeric, categorical, DriftSpec())
    theirs = evidently_drift(reference, current, numeric, categorical)
    assert sorted(theirs) == sorted(c.column for c in ours.columns)
    for column in ours.columns:
        score, _ = theirs[column.column]
        assert column.score == pytest.approx(score, rel=1e-9, abs=1e-12), column
    if reference_rows > 1000:  # distances: only the shifted columns drift
        assert ours.drifted_columns == (["age", "sex"] if shift else [])
        assert ours.dataset_drift is False


def test_the_demo_drift_knob_drifts_and_knob_zero_does_not():
    spec = get_spec("demo", get_settings())
    numeric = [f.name for f in spec.features if f.type != "category"]
    history = generate(5000)
    calm = dataset_drift(
        history, traffic(2000, 0.0), numeric, spec.categorical_features, spec.monitoring.drift
    )
    assert calm.drifted_columns == [] and not calm.dataset_drift
    drifting = dataset_drift(
        history, traffic(2000, 1.0), numeric, spec.categorical_features, spec.monitoring.drift
    )
    assert drifting.dataset_drift
    assert {"age", "income", "balance", "support_calls"} <= set(drifting.drifted_columns)

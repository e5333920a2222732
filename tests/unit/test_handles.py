"""The typed hand-offs between training tasks: a wrong field fails where it is written, and
Airflow's XCom serialization gives back the same object."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from maestro.handles import BestTrial, CandidateVersion, TrainingRun

RUN = TrainingRun(
    model="demo",
    dag_id="train_demo",
    airflow_run_id="manual__1",
    pipeline_run_id="abc",
    data={"hash": "h", "rows": 3, "start": "s", "end": "e", "source": "demo", "path": "/p"},
)


def test_a_misspelt_or_mistyped_field_fails_in_the_stage_that_writes_it():
    with pytest.raises(ValidationError, match="studdy"):
        RUN.updated(studdy="demo-abc")
    with pytest.raises(ValidationError, match="budget"):
        RUN.updated(budget="many")
    with pytest.raises(ValidationError, match="version"):
        CandidateVersion(model="demo", alias="challenger", model_uri="m", test_metrics={},
                         pipeline_run_id="abc", training_set="/t")  # fmt: skip


def test_updated_returns_a_new_handle_and_leaves_the_old_one_alone():
    tuned = RUN.updated(study="demo-abc", budget=8, workers=2)
    assert (tuned.study, tuned.budget, RUN.study) == ("demo-abc", 8, None)
    with pytest.raises(ValidationError):
        tuned.budget = 9  # frozen: a task cannot change what it was handed


def test_handles_survive_airflows_xcom_serialization():
    from airflow.sdk.serde import deserialize, serialize

    best = BestTrial(
        number=3, family="lightgbm", params={"num_leaves": 15, "lr": 0.1}, value=0.8, trials=8
    )
    handle = RUN.updated(study="demo-abc", best=best)
    again = deserialize(serialize(handle))
    assert again == handle and isinstance(again.best, BestTrial)
    assert again.best.params["num_leaves"] == 15 and isinstance(
        again.best.params["num_leaves"], int
    )

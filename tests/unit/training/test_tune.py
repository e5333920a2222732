"""Tuning: parallel workers share one study and its budget; every trial is a nested run."""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor

import optuna
import pytest

from maestro import tracking
from maestro.config import get_settings
from maestro.training import stages

pytestmark = pytest.mark.slow  # Optuna studies run by a process pool


@pytest.fixture
def handle(small_specs):
    run = stages.RunInfo("train_demo", "unit_tune")
    h = stages.ingest("demo", run, small_specs)
    h = stages.materialize_features(h, small_specs)
    return stages.build_training_set(h, small_specs)


def _worker(args) -> int:
    handle, worker = args
    return stages.tune_worker(handle, worker, get_settings())


def test_two_workers_spend_exactly_the_budget(handle, small_specs):
    started = stages.start_tuning(handle, small_specs, trials=8, workers=2)
    with ProcessPoolExecutor(2) as pool:
        ran = list(pool.map(_worker, [(started, 0), (started, 1)]))
    assert sum(ran) == 8 and min(ran) >= 1, ran
    from maestro.training import tune

    study = tune.open_study(tracking_spec(small_specs), small_specs, started.study)
    finished = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    assert len(finished) == 8
    assert {t.params["family"] for t in finished} <= {"lightgbm", "logistic_regression"}
    children = tracking.client(small_specs).search_runs(
        [tracking.experiment_id(small_specs, "demo")],
        filter_string=f"tags.`mlflow.parentRunId` = '{started.tune_run_id}'",
    )
    assert len(children) == 8
    assert all(
        "val_roc_auc" in r.data.metrics or r.data.tags.get("trial_state") == "PRUNED"
        for r in children
    )
    # A second pass over the same study (a retried task) runs nothing more.
    assert _worker((started, 0)) == 0


def test_a_lost_try_of_a_slot_leaves_no_trial_running():
    """A tune task whose worker was killed mid-trial is retried: the trial it left running is
    failed (only one try of a slot runs at a time); other slots' trials are left alone."""
    from maestro.training.tune import fail_abandoned

    study = optuna.create_study()
    lost, other = study.ask(), study.ask()
    lost.set_user_attr("worker", 1)
    other.set_user_attr("worker", 0)
    fail_abandoned(study, 1)
    states = {t.number: t.state for t in study.get_trials()}
    assert states == {
        lost.number: optuna.trial.TrialState.FAIL,
        other.number: optuna.trial.TrialState.RUNNING,
    }


def test_best_configuration_and_plots(handle, small_specs, tmp_path):
    from maestro.training import tune

    started = stages.start_tuning(handle, small_specs, trials=8, workers=1)
    stages.tune_worker(started, 0, small_specs)
    best = tune.best_configuration(tracking_spec(small_specs), small_specs, started.study)
    assert best["family"] in {"lightgbm", "logistic_regression"}
    assert 0.5 < best["value"] <= 1.0
    written = tune.log_study_plots(tracking_spec(small_specs), small_specs, started.study, tmp_path)
    assert written[0].name == "optimization_history.html"
    assert all(p.stat().st_size > 1000 for p in written)


def tracking_spec(settings):
    from maestro.spec import get_spec

    return get_spec("demo", settings)


LIGHTGBM_TRIAL = {
    "family": "lightgbm",
    "lightgbm.n_estimators": 60,
    "lightgbm.num_leaves": 16,
    "lightgbm.learning_rate": 0.1,
    "lightgbm.min_child_samples": 20,
}


@pytest.mark.parametrize("pruning", [True, False])
def test_pruning_follows_the_spec(handle, small_specs, use_specs, pruning):
    """With pruning on, LightGBM trials report their validation curve so the median pruner
    can stop them; with `pruning: false` they report nothing and always run to the end."""
    from maestro.training import tune

    settings = use_specs(
        {"demo": {"source": {"rows": 3000}, "pruning": pruning}}, f"specs-{pruning}"
    )
    spec = tracking_spec(settings)
    started = stages.start_tuning(handle, settings, trials=1, workers=1)
    tune.open_study(spec, settings, started.study).enqueue_trial(LIGHTGBM_TRIAL)
    assert stages.tune_worker(started, 0, settings) == 1
    study = tune.open_study(spec, settings, started.study)
    (trial,) = study.trials
    assert trial.state == optuna.trial.TrialState.COMPLETE
    assert isinstance(study.pruner, optuna.pruners.MedianPruner) is pruning
    assert (max(trial.intermediate_values, default=0) >= 50) is pruning

"""Hyperparameter search: one Optuna study (TPE, median pruner) shared by parallel workers.

Each worker (a mapped Airflow task) runs trials until the study's budget is spent, so more
workers finish the same budget sooner. Every trial is a nested MLflow run under the tuning run;
LightGBM trials are pruned on their validation curve (optuna-integration's callback), a spec's
own trainer on the values it reports.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd

from maestro.config import Settings
from maestro.models import scores
from maestro.spec import ModelSpec
from maestro.training import custom
from maestro.training.families import (
    build_estimator,
    estimator_fit_params,
    evaluate,
    preparation,
    preprocessor,
    suggest,
)

# LightGBM's own name of each spec metric, for pruning on its validation curve (None: no pruning).
LIGHTGBM_METRIC = {
    "roc_auc": "auc",
    "accuracy": "auc",
    "f1": "auc",
    "log_loss": "binary_logloss",
    "rmse": "rmse",
    "mae": "l1",
    "r2": None,
}
# ... and of a multiclass spec's: its multiclass AUC for the metrics to maximize.
LIGHTGBM_MULTICLASS_METRIC = {
    "accuracy": "auc_mu",
    "f1_macro": "auc_mu",
    "f1_weighted": "auc_mu",
    "roc_auc_ovr": "auc_mu",
    "log_loss": "multi_logloss",
}


def storage(settings: Settings, study_name: str) -> Any:
    """Optuna storage from the settings' URL: a journal file by default, or an RDB URL."""
    import optuna

    url = settings.optuna_url(study_name)
    if url.startswith("journal://"):
        from optuna.storages.journal import JournalFileBackend

        path = Path(url.removeprefix("journal://"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))
    return optuna.storages.RDBStorage(url)


def open_study(spec: ModelSpec, settings: Settings, study_name: str, seed: int = 0) -> Any:
    import optuna

    pruner = (
        optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=10)
        if spec.pruning
        else optuna.pruners.NopPruner()
    )
    return optuna.create_study(
        study_name=study_name,
        storage=storage(settings, study_name),
        direction=spec.metric.direction,
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5),
        pruner=pruner,
        load_if_exists=True,
    )


def make_objective(
    spec: ModelSpec,
    train: pd.DataFrame,
    valid: pd.DataFrame,
) -> Any:
    """The objective: fit a drawn family and configuration, score it on the validation split.

    Preprocessing does not depend on a trial's hyperparameters, so each kind is fitted once
    per worker and trials fit only the estimator: the same result, at a fraction of the cost.
    """
    import optuna
    from optuna_integration import LightGBMPruningCallback

    X, y = train[spec.feature_names], train[spec.target.name].to_numpy()
    Xv, yv = valid[spec.feature_names], valid[spec.target.name].to_numpy()
    families = sorted(spec.search_space)
    prepared: dict[str, tuple[pd.DataFrame, pd.DataFrame]] = {}

    def features_for(family: str) -> tuple[pd.DataFrame, pd.DataFrame]:
        kind = preparation(family)
        if kind not in prepared:
            prep = preprocessor(spec, family).fit(X, y)
            prepared[kind] = (prep.transform(X), prep.transform(Xv))
        return prepared[kind]

    def objective(trial: optuna.Trial) -> float:
        family = trial.suggest_categorical("family", families)
        params = suggest(trial, family, spec.search_space[family])
        if family in spec.trainers:
            return trained_by_trainer(spec, family, params, train, valid, trial)
        estimator = build_estimator(spec, family, params)[-1]
        Xt, Xvt = features_for(family)
        extra: dict[str, Any] = estimator_fit_params(spec, family)
        lgb_metric = (LIGHTGBM_MULTICLASS_METRIC if spec.multiclass else LIGHTGBM_METRIC)[
            spec.metric.name
        ]
        if family == "lightgbm" and lgb_metric and spec.pruning:
            extra |= {
                "eval_X": Xvt,
                "eval_y": yv,
                "eval_metric": lgb_metric,
                "callbacks": [LightGBMPruningCallback(trial, lgb_metric, report_interval=10)],
            }
        started = time.perf_counter()
        estimator.fit(Xt, y, **extra)
        trial.set_user_attr("family", family)
        trial.set_user_attr("fit_seconds", round(time.perf_counter() - started, 3))
        return evaluate(spec, yv, scores(estimator, spec, Xvt))[spec.metric.name]

    return objective


def trained_by_trainer(
    spec: ModelSpec,
    family: str,
    params: dict[str, Any],
    train: pd.DataFrame,
    valid: pd.DataFrame,
    trial: Any,
) -> float:
    """One trial of a spec's own trainer: its model's validation metric. What it reports is
    the trial's curve, pruned by the study's pruner when the spec allows pruning."""
    import optuna

    def report(step: int, value: float) -> None:
        trial.report(float(value), int(step))
        if spec.pruning and trial.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")

    context = custom.TrainingContext(train, valid, params, spec, seed=0, threads=1, report=report)
    started = time.perf_counter()
    model = custom.train(spec, family, context)
    trial.set_user_attr("family", family)
    trial.set_user_attr("fit_seconds", round(time.perf_counter() - started, 3))
    predicted = custom.checked_scores(spec, family, model, valid[spec.feature_names])
    return evaluate(spec, valid[spec.target.name].to_numpy(), predicted)[spec.metric.name]


def budget_left(study: Any, budget: int) -> bool:
    """Whether the study has started fewer than `budget` trials (enqueued ones wait, uncounted)."""
    from optuna.trial import TrialState

    started = (TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    return len(study.get_trials(deepcopy=False, states=started)) < budget


def fail_abandoned(study: Any, worker: int) -> None:
    """Fail the trials this worker slot left running: its previous try was lost with its
    machine (one try of a slot runs at a time), and they would hold the budget forever."""
    from optuna.trial import TrialState

    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if trial.user_attrs.get("worker") == worker:
            study.tell(trial.number, state=TrialState.FAIL)


def run_worker(
    spec: ModelSpec,
    settings: Settings,
    study_name: str,
    budget: int,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    parent_run_id: str,
    experiment_id: str,
    worker: int = 0,
) -> int:
    """Run trials until the study holds `budget` of them; return how many this worker ran."""
    import optuna
    from threadpoolctl import threadpool_limits

    from maestro.tracking import client

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = open_study(spec, settings, study_name, seed=worker)
    fail_abandoned(study, worker)
    objective = make_objective(spec, train, valid)
    mlc = client(settings)
    # Parallelism comes from workers: one thread each, so two workers never fight over BLAS.
    with threadpool_limits(limits=1):
        return _run_until_spent(
            study,
            budget,
            objective,
            mlc,
            experiment_id,
            parent_run_id,
            f"val_{spec.metric.name}",
            worker,
        )


def _run_until_spent(
    study: Any,
    budget: int,
    objective: Any,
    mlc: Any,
    experiment_id: str,
    parent_run_id: str,
    metric: str,
    worker: int,
) -> int:
    import optuna

    ran = 0
    while budget_left(study, budget):
        trial = study.ask()
        trial.set_user_attr("worker", worker)
        if trial.number >= budget:  # another worker took the last slot meanwhile
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            break
        state, value = _run_trial(study, objective, trial)
        frozen = study.tell(trial, value, state=state)
        log_trial(mlc, experiment_id, parent_run_id, frozen, metric, worker)
        ran += 1
    return ran


def log_trial(
    mlc: Any, experiment_id: str, parent_run_id: str, trial: Any, metric: str, worker: int
) -> None:
    """Record a finished trial as a nested MLflow run (params, value, state, timing).

    Written through the client rather than Optuna's deprecated MLflowCallback, so parallel
    workers never share MLflow's process-global active-run stack.
    """
    from mlflow.entities import Metric, Param, RunTag

    run = mlc.create_run(
        experiment_id,
        run_name=f"trial-{trial.number}",
        tags={"mlflow.parentRunId": parent_run_id, "maestro.stage": "trial"},
    )
    now = int(time.time() * 1000)
    metrics = [Metric(metric, trial.value, now, 0)] if trial.value is not None else []
    metrics += [
        Metric(f"{metric}_step", v, now, step)
        for step, v in sorted(trial.intermediate_values.items())
    ]
    if "fit_seconds" in trial.user_attrs:
        metrics.append(Metric("fit_seconds", trial.user_attrs["fit_seconds"], now, 0))
    mlc.log_batch(
        run.info.run_id,
        metrics=metrics,
        params=[Param(k, str(v)) for k, v in trial.params.items()],
        tags=[
            RunTag("trial_number", str(trial.number)),
            RunTag("trial_state", trial.state.name),
            RunTag("worker", str(worker)),
        ],
    )
    mlc.set_terminated(run.info.run_id, "FINISHED" if trial.value is not None else "KILLED")


def _run_trial(study: Any, objective: Any, trial: Any) -> tuple:
    """(state, value) of one trial; a trial that raises is recorded as failed, then re-raised
    so the task fails (and retries) rather than the study keeping a trial forever running."""
    import optuna

    try:
        return optuna.trial.TrialState.COMPLETE, objective(trial)
    except optuna.TrialPruned:
        return optuna.trial.TrialState.PRUNED, None
    except Exception:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
        raise


def best_configuration(spec: ModelSpec, settings: Settings, study_name: str) -> dict[str, Any]:
    """The best completed trial: family, its parameters, value and number."""
    study = open_study(spec, settings, study_name)
    best = study.best_trial
    family = best.params["family"]
    prefix = f"{family}."
    params = {k.removeprefix(prefix): v for k, v in best.params.items() if k.startswith(prefix)}
    return {
        "family": family,
        "params": params,
        "value": best.value,
        "number": best.number,
        "trials": len(study.trials),
    }


def log_study_plots(
    spec: ModelSpec, settings: Settings, study_name: str, folder: Path
) -> list[Path]:
    """Optimization history and, per family, parameter importances, as HTML files."""
    import optuna
    from optuna.visualization import plot_optimization_history, plot_param_importances

    study = open_study(spec, settings, study_name)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "optimization_history.html"]
    plot_optimization_history(study).write_html(written[0], include_plotlyjs="cdn")
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    for family in sorted(spec.search_space):
        trials = [t for t in done if t.params["family"] == family]
        if len(trials) < 2 or len(spec.search_space[family]) < 1:
            continue
        sub = optuna.create_study(direction=spec.metric.direction)
        sub.add_trials(trials)
        path = folder / f"param_importances_{family}.html"
        plot_param_importances(sub).write_html(path, include_plotlyjs="cdn")
        written.append(path)
    return written

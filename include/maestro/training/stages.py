"""The training pipeline's stages, one function per Airflow task.

Each stage takes and returns a small typed handle (`maestro.handles`: model name, run ids,
paths), never data, so the stages map one-to-one onto tasks passing XComs.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from maestro import registry, tracking, vocabulary
from maestro.config import Settings
from maestro.handles import BestTrial, CandidateVersion, FeatureSet, TrainingRun, TrainingTrigger
from maestro.models import library, model_metadata, raw_output, scores
from maestro.spec import ModelSpec, get_spec
from maestro.training import custom
from maestro.training.families import build_estimator, evaluate, fit
from maestro.training.splits import check_class_coverage, split_by_time


@dataclass(frozen=True)
class RunInfo:
    """Who asked for the run: the Airflow DAG and run, and where its window ends."""

    dag_id: str
    run_id: str
    window_end: str | None = None
    trigger: TrainingTrigger = TrainingTrigger(trigger="manual")


def _spec(handle: TrainingRun, settings: Settings) -> ModelSpec:
    return get_spec(handle.model, settings)


def why_train(
    model: str, settings: Settings, run_type: str, requested: str, events: list[dict]
) -> TrainingTrigger | str:
    """The run's trigger from how Airflow started it (`run_type`), what a manual run asked for
    (`requested`: manual or ci) and the drift events behind an asset-triggered run; or, for a
    drift-triggered run inside the spec's cooldown after the last training, why nothing is
    to be trained."""
    import datetime as dt

    spec = get_spec(model, settings)
    if run_type == "scheduled":
        return TrainingTrigger(trigger="schedule", reason="its schedule")
    if run_type != "asset_triggered" and requested != "drift":
        return TrainingTrigger(trigger=requested, reason="")
    last = events[-1] if events else {}
    trigger = TrainingTrigger(
        trigger="drift",
        reason=f"monitoring verdict {last.get('status', 'drift')} on version "
        f"{last.get('version', '?')}: drifted {', '.join(last.get('drifted_columns') or []) or 'none'}"
        + (f"; {'; '.join(last['breached'])}" if last.get("breached") else ""),
        drift_report_run_id=last.get("report_run_id"),
    )
    versions = tracking.client(settings).search_model_versions(f"name = '{model}'")
    if versions:
        newest = max(versions, key=lambda v: v.creation_timestamp)
        trained = dt.datetime.fromtimestamp(newest.creation_timestamp / 1000, dt.UTC)
        until = trained + dt.timedelta(hours=spec.monitoring.cooldown_hours)
        if dt.datetime.now(dt.UTC) < until:
            return (
                f"{model}: drift-triggered run inside the cooldown: version {newest.version} was "
                f"trained at {trained.isoformat(timespec='seconds')} and the spec's cooldown of "
                f"{spec.monitoring.cooldown_hours:g} h lasts until "
                f"{until.isoformat(timespec='seconds')}; nothing is trained"
            )
    return trigger


def ingest(model: str, run: RunInfo, settings: Settings) -> TrainingRun:
    """Snapshot the source for the run's window and open the run's MLflow record."""
    from maestro.data import sources

    spec = get_spec(model, settings)
    end = pd.Timestamp(run.window_end) if run.window_end else None
    version = sources.ingest(spec, settings, end)
    run_id = tracking.pipeline_run(settings, model, run.dag_id, run.run_id)
    mlc = tracking.client(settings)
    for key, value in {
        "data_version": version.hash,
        "data_rows": version.rows,
        "data_start": version.start,
        "data_end": version.end,
        "data_source": version.source,
    }.items():
        mlc.set_tag(run_id, key, str(value))
    return TrainingRun(
        model=model,
        dag_id=run.dag_id,
        airflow_run_id=run.run_id,
        pipeline_run_id=run_id,
        data=version.to_dict(),
        trigger=run.trigger,
    )


def validate_data(handle: TrainingRun, settings: Settings) -> TrainingRun:
    """Run the spec's expectation suite; publish Data Docs; stop the run on any failure."""
    from maestro.data import sources, validation

    spec = _spec(handle, settings)
    frame = sources.load_snapshot(handle.data, settings)
    mlc = tracking.client(settings)
    with tempfile.TemporaryDirectory(prefix="maestro-gx-") as tmp:
        report = validation.validate(frame, spec, Path(tmp))
        mlc.log_artifacts(handle.pipeline_run_id, str(report.docs_dir), "data_validation")
    mlc.log_metric(handle.pipeline_run_id, "data_expectations_failed", len(report.failed))
    mlc.set_tag(
        handle.pipeline_run_id,
        "data_validation",
        vocabulary.PASSED if report.success else vocabulary.FAILED,
    )
    if not report.success:
        mlc.set_terminated(handle.pipeline_run_id, "FAILED")
        raise validation.ValidationFailed(
            f"{spec.name}: data validation failed: {report.summary()}"
        )
    return handle.updated(validation=report.summary())


def materialize_features(handle: TrainingRun, settings: Settings) -> TrainingRun:
    """Apply the model's Feast definitions and materialize the window online."""
    from maestro.data import features, sources

    spec = _spec(handle, settings)
    frame = sources.load_snapshot(handle.data, settings)
    start = pd.Timestamp(handle.data["start"])
    end = pd.Timestamp(handle.data["end"]) + pd.Timedelta(seconds=1)
    result = features.apply_and_materialize(frame, spec, settings, start, end)
    mlc = tracking.client(settings)
    mlc.set_tag(handle.pipeline_run_id, "feature_service", result["feature_service"])
    mlc.set_tag(handle.pipeline_run_id, "feature_views", ",".join(result["feature_views"]))
    return handle.updated(features=FeatureSet(**result))


def build_training_set(handle: TrainingRun, settings: Settings) -> TrainingRun:
    """Point-in-time features from Feast, split by time, saved as parquet and as artifacts."""
    from maestro.data import features, sources

    spec = _spec(handle, settings)
    snapshot = sources.load_snapshot(handle.data, settings)
    frame = features.historical_features(snapshot, spec, settings)
    folder = settings.home / "training_sets" / spec.name / handle.data["hash"]
    folder.mkdir(parents=True, exist_ok=True)
    sizes = {}
    splits = split_by_time(frame, spec)
    if spec.multiclass:
        check_class_coverage(spec, splits)
    for name, part in splits.items():
        part.to_parquet(folder / f"{name}.parquet", index=False)
        sizes[name] = len(part)
    (folder / "splits.json").write_text(json.dumps(sizes))
    mlc = tracking.client(settings)
    mlc.log_artifacts(handle.pipeline_run_id, str(folder), "training_set")
    return handle.updated(training_set=str(folder), splits=sizes)


def load_split(handle: TrainingRun | CandidateVersion, name: str) -> pd.DataFrame:
    return pd.read_parquet(Path(handle.training_set) / f"{name}.parquet")


def start_tuning(handle: TrainingRun, settings: Settings, trials: int, workers: int) -> TrainingRun:
    """Create the study and the tuning run; the study is named after the Airflow run."""
    from maestro.training import tune

    spec = _spec(handle, settings)
    study = f"{spec.name}-{handle.pipeline_run_id}"
    tune.open_study(spec, settings, study)
    mlc = tracking.client(settings)
    found = mlc.search_runs(
        [tracking.experiment_id(settings, spec.name)],
        filter_string=f"tags.`maestro.stage` = 'tune' and tags.`mlflow.parentRunId` = "
        f"'{handle.pipeline_run_id}'",
        max_results=1,
    )
    tune_run = (
        found[0].info.run_id
        if found
        else tracking.child_run(settings, handle.pipeline_run_id, "tune", "tune")
    )
    mlc.set_tag(tune_run, "trial_budget", str(trials))  # tags: a re-run may change them
    mlc.set_tag(tune_run, "workers", str(workers))
    return handle.updated(study=study, tune_run_id=tune_run, budget=trials, workers=workers)


def tune_worker(handle: TrainingRun, worker: int, settings: Settings) -> int:
    """One parallel slot: run trials of the shared study until its budget is spent."""
    from maestro.training import tune

    spec = _spec(handle, settings)
    return tune.run_worker(
        spec,
        settings,
        handle.study,
        handle.budget,
        load_split(handle, "train"),
        load_split(handle, "valid"),
        handle.tune_run_id,
        tracking.experiment_id(settings, spec.name),
        worker,
    )


def finish_tuning(handle: TrainingRun, settings: Settings) -> TrainingRun:
    """Pick the best trial; log it and the study's plots on the tuning run."""
    from maestro.training import tune

    spec = _spec(handle, settings)
    best = BestTrial(**tune.best_configuration(spec, settings, handle.study))
    mlc = tracking.client(settings)
    run = handle.tune_run_id
    mlc.log_param(run, "best_family", best.family)
    for key, value in best.params.items():
        mlc.log_param(run, f"best.{key}", value)
    mlc.log_metric(run, f"best_val_{spec.metric.name}", best.value)
    mlc.set_tag(run, "best_trial", str(best.number))
    with tempfile.TemporaryDirectory(prefix="maestro-plots-") as tmp:
        tune.log_study_plots(spec, settings, handle.study, Path(tmp))
        mlc.log_artifacts(run, tmp, "plots")
    mlc.set_terminated(run)
    return handle.updated(best=best)


def train_final(handle: TrainingRun, settings: Settings) -> TrainingRun:
    """Refit the best configuration and log the model with its test metrics: a built-in family
    on train+validation; a spec's own trainer by the same call as its trials (train and
    validation frames, so early stopping keeps its validation set), with `final=True`."""
    import mlflow

    spec = _spec(handle, settings)
    best = handle.best
    assert best is not None, "train_final runs after finish_tuning"
    train, valid = load_split(handle, "train"), load_split(handle, "valid")
    test = load_split(handle, "test")
    if best.family in spec.trainers:
        model = fit_trainer(spec, best, train, valid)
        example = train[spec.feature_names].head(5)
    else:
        model, example = fit_family(spec, best, pd.concat([train, valid]))
    test_scores = checked_scores(spec, best.family, model, test[spec.feature_names])
    metrics = {
        f"test_{k}": v
        for k, v in evaluate(spec, test[spec.target.name].to_numpy(), test_scores).items()
    }
    run_id = tracking.child_run(settings, handle.pipeline_run_id, "train_final", "train")
    with mlflow.start_run(run_id=run_id):
        mlflow.log_params({"family": best.family, **best.params})
        mlflow.log_metrics(metrics)
        if best.family in spec.trainers:
            requirements = serving_requirements(model)
            logged = custom.log_model(spec, best.family, model, example, requirements)
        else:
            logged = log_pipeline(model, spec, example)
    return handle.updated(
        model_run_id=run_id, logged_model_uri=logged.model_uri, test_metrics=metrics
    )


def fit_family(spec: ModelSpec, best: BestTrial, seen: pd.DataFrame) -> tuple[Any, pd.DataFrame]:
    """A built-in family's pipeline fitted on `seen`, and its input example."""
    X, y = seen[spec.feature_names], seen[spec.target.name].to_numpy()
    model = fit(build_estimator(spec, best.family, best.params, threads=2), spec, best.family, X, y)
    return model, X.head(5)


def fit_trainer(
    spec: ModelSpec,
    best: BestTrial,
    train: pd.DataFrame,
    valid: pd.DataFrame,
) -> Any:
    context = custom.TrainingContext(train, valid, best.params, spec, seed=0, threads=2, final=True)
    return custom.train(spec, best.family, context)


def checked_scores(
    spec: ModelSpec,
    family: str,
    model: Any,
    features: pd.DataFrame,
) -> Any:
    """Test-split scores; a spec's own trainer's are checked for shape and NaN first."""
    if family in spec.trainers:
        return custom.checked_scores(spec, family, model, features)
    return scores(model, spec, features)


def log_pipeline(model: Any, spec: ModelSpec, example: pd.DataFrame) -> Any:
    """Log a fitted pipeline into the active MLflow run with its signature (what the server
    validates requests against) and input example (what smoke tests send)."""
    import mlflow
    from mlflow.models import infer_signature

    return mlflow.sklearn.log_model(
        model,
        name="model",
        signature=infer_signature(example, raw_output(model, spec, example)),
        input_example=example,
        pyfunc_predict_fn="predict_proba" if spec.classification else "predict",
        skops_trusted_types=own_types(model),
        pip_requirements=serving_requirements(model),
        metadata=model_metadata(spec),
    )


# The distribution a model's library comes in, by the library's top-level module.
LIBRARY_PACKAGES = {"lightgbm": "lightgbm", "xgboost": "xgboost-cpu", "catboost": "catboost"}


def serving_requirements(model: Any) -> list[str]:
    """Pins of what loading `model` needs, taken from this environment (no inference run):
    the core's, and the library of its final estimator (a pipeline's last step)."""
    from importlib.metadata import version

    package = LIBRARY_PACKAGES.get(library(model))
    packages = ["mlflow", "scikit-learn", "pandas", "numpy", "skops", "cloudpickle"]
    packages += [package] if package else []
    return [f"{name}=={version(name)}" for name in packages]


def own_types(model: Any) -> list[str]:
    """The types skops must trust to load `model`: exactly those our own pipeline contains."""
    import skops.io

    return skops.io.get_untrusted_types(data=skops.io.dumps(model))


def lineage_tags(handle: TrainingRun, settings: Settings) -> dict[str, str]:
    data = handle.data
    return {
        "data_version": data["hash"],
        "data_rows": str(data["rows"]),
        "data_source": data["source"],
        "training_window_start": data["start"],
        "training_window_end": data["end"],
        "feature_service": handle.features.feature_service,
        "feature_views": ",".join(handle.features.feature_views),
        "airflow_dag_id": handle.dag_id,
        "airflow_run_id": handle.airflow_run_id,
        "code_version": tracking.code_version(settings),
        "best_trial": str(handle.best.number),
        "best_family": handle.best.family,
        "pipeline_run_id": handle.pipeline_run_id,
        "optuna_study": handle.study,
        "trigger": handle.trigger.trigger,
        "trigger_reason": handle.trigger.reason,
        "drift_report_run_id": handle.trigger.drift_report_run_id or "",
    }


def register(handle: TrainingRun, settings: Settings) -> CandidateVersion:
    """Register the model (once per Airflow run), tag its lineage, then alias it challenger."""
    spec = _spec(handle, settings)
    tags = lineage_tags(handle, settings)
    version = registry.register(settings, spec.name, handle.logged_model_uri, tags)
    registry.set_alias(settings, spec.name, vocabulary.CHALLENGER, version)
    mlc = tracking.client(settings)
    mlc.set_tag(handle.pipeline_run_id, "registered_version", version)
    mlc.set_terminated(handle.pipeline_run_id)
    return CandidateVersion(
        model=spec.name,
        version=str(version),
        alias=vocabulary.CHALLENGER,
        model_uri=f"models:/{spec.name}@{vocabulary.CHALLENGER}",
        test_metrics=handle.test_metrics,
        pipeline_run_id=handle.pipeline_run_id,
        training_set=handle.training_set,
    )

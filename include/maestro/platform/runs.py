"""The command line's runs: a DAG run in this process (`dag.test()`, watched task by task),
what it prints when it ends, waits or is stopped, and the asset event a CLI promotion sends
through Airflow's REST API."""

from __future__ import annotations

import time
from typing import Any

from maestro.config import Settings
from maestro.vocabulary import PASSED, VALIDATION_STATUS_TAG


def echo(line: str = "") -> None:
    print(line, flush=True)


def prepare(settings: Settings) -> None:
    """Create the state folder and bring the Airflow metadata database up to date."""
    from maestro.platform.airflow_env import migrate_metadata_db, private_folder

    echo(f"state folder   {settings.home}")
    private_folder(settings.home)
    started = time.perf_counter()
    migrate_metadata_db(settings, settings.home / "airflow-setup.log")
    echo(f"airflow db     ready ({time.perf_counter() - started:.1f}s)")


def approval_hint(model: str, settings: Settings, approve_as: str | None) -> Any:
    """What to do when the run waits for a human: say how to answer, or (the demo) answer."""
    from maestro import tracking, vocabulary
    from maestro.governance import decisions

    def on_state(label: str, state: str) -> None:
        # dag.test() keeps a deferred task "queued" while it runs the trigger in line
        if label != "request_approval" or state not in ("queued", "deferred"):
            return
        version = tracking.client(settings).get_model_version_by_alias(model, vocabulary.CHALLENGER)
        if approve_as is None:
            echo(
                f"  waiting for a decision on {model} version {version.version}: approve in the "
                f"Airflow UI (Required Actions) or run `maestro approve {model} {version.version}`"
            )
            return
        decisions.record_decision(
            settings,
            model,
            version.version,
            vocabulary.APPROVED,
            approve_as,
            "approved by `maestro demo`, which plays the demo's approver",
            "maestro-demo",
        )
        echo(f"  approved {model} version {version.version} as {approve_as} (the demo's approver)")

    return on_state


def train(model: str, settings: Settings, conf: dict, approve_as: str | None = None) -> int:
    from maestro.platform.airflow_env import RunInterrupted, watch_dag_test
    from maestro.spec import get_spec

    get_spec(model, settings)  # fail now, clearly, on a bad spec
    prepare(settings)
    log = settings.home / "logs" / f"train_{model}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = {k: v for k, v in conf.items() if k != "drift_event"}  # the event: its own line
    echo(f"running DAG    train_{model} {shown or ''} (task logs: {log})")
    started = time.perf_counter()
    on_state = approval_hint(model, settings, approve_as)
    try:
        code = watch_dag_test(f"train_{model}", settings, conf, log, echo, on_state).code
    except RunInterrupted as stop:
        explain_interruption(model, settings, stop)
        return stop.exit_code
    echo(
        f"finished in {time.perf_counter() - started:.0f}s: {'success' if code == 0 else 'FAILED'}"
    )
    if code != 0:
        echo(f"see the task logs in {log}")
        return code
    return show(model, settings)


def explain_interruption(model: str, settings: Settings, stop: Any) -> None:
    """Say what a stopped training run left undone and how to finish it."""
    from maestro import registry
    from maestro.spec import get_spec

    dag_id = f"train_{model}"
    echo(f"\n{stop}: stopped {dag_id} run {stop.run_id or '(not started)'}")
    if stop.run_id:
        echo(f"  marked failed in Airflow; not finished: {', '.join(stop.unfinished) or 'none'}")
    version = registry.version_of_run(settings, model, dag_id, stop.run_id) if stop.run_id else None
    waiting = version is not None and "request_approval" in stop.unfinished
    if waiting and version and version.tags.get(VALIDATION_STATUS_TAG) == PASSED:
        approvers = get_spec(model, settings).governance.approvers
        by = approvers[0] if len(approvers) == 1 else "<approver>"
        echo(
            f"  {model} version {version.version} passed every gate and waits for a decision; "
            "champion has not moved. To finish it:"
        )
        echo(f"    maestro approve {model} {version.version} --by {by}")
        echo(f"    maestro promote {model} {version.version} --by {by}")
        if len(approvers) > 1:
            echo(f"  (approvers: {', '.join(approvers)})")
        echo(f"  or train again: `maestro train {model}`, or trigger {dag_id} on the platform")
    else:
        if version is not None:
            echo(f"  {model} version {version.version} is registered but was not decided on")
        echo(
            f"  champion has not moved; train again: `maestro train {model}`, or trigger "
            f"{dag_id} on the platform (`maestro up`, then the Airflow UI or its REST API)"
        )


def show(model: str, settings: Settings) -> int:
    """Print the challenger version of `model`, its metrics, lineage and where to look."""
    from maestro import tracking, vocabulary

    mlc = tracking.client(settings)
    version = mlc.get_model_version_by_alias(model, vocabulary.CHALLENGER)
    run = mlc.get_run(version.run_id)
    echo()
    echo(f"registered     models:/{model}@challenger -> version {version.version}")
    for key, value in sorted(run.data.metrics.items()):
        echo(f"  {key:<22} {value:.4f}")
    for key in (
        "data_version",
        "data_rows",
        "training_window_start",
        "training_window_end",
        "feature_service",
        "best_family",
        "best_trial",
        "airflow_run_id",
        "code_version",
    ):
        echo(f"  {key:<22} {version.tags.get(key, '')}")
    echo(
        f"validation     {version.tags.get('validation_status', 'not evaluated')} "
        f"(failed: {version.tags.get('validation_failed', 'n/a')})"
    )
    echo(
        f"approval       {version.tags.get('approval', 'none')} {version.tags.get('approval_by', '')}"
    )
    from maestro.registry import champion_version
    from maestro.vocabulary import CHAMPION

    champion = champion_version(settings, model)
    echo(f"{CHAMPION:<14} {f'version {champion.version}' if champion else 'none yet'}")
    echo(f"model card     {version.tags.get('model_card', 'n/a')}")
    pipeline = version.tags.get("pipeline_run_id", "")
    echo(f"artifacts      {run.info.artifact_uri}")
    echo(f"data docs      {mlc.get_run(pipeline).info.artifact_uri}/data_validation/index.html")
    echo(f"tracking store {settings.tracking_uri}")
    echo()
    echo(
        "look at it:    .venv/bin/maestro up   # Airflow UI http://localhost:8080, MLflow UI "
        "http://localhost:5000"
    )
    return 0


def monitor(model: str, settings: Settings, window_end: str = "") -> int:
    """Run `monitor_<model>` once and print its verdict."""
    from maestro.platform.airflow_env import watch_dag_test

    log = settings.home / "logs" / f"monitor_{model}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    echo(f"running DAG    monitor_{model} (task logs: {log})")
    code = watch_dag_test(f"monitor_{model}", settings, {"window_end": window_end}, log, echo).code
    if code != 0:
        echo(f"monitoring FAILED; see {log}")
        return code
    import mlflow

    from maestro import registry, tracking

    tracking.use_tracking(settings)
    run_id = registry.champion_version(settings, model).tags["monitoring_run_id"]
    found = mlflow.artifacts.load_dict(f"runs:/{run_id}/monitoring/verdict.json")
    echo(f"verdict        {found['status']}: {found['reason']}")
    echo(f"monitoring run {run_id} (Evidently report: monitoring/drift.html)")
    return 0


def announce_champion(settings: Settings, done: dict) -> None:
    """The asset event the DAG's `promote` task would emit, through Airflow's REST API. The
    registry has already moved; without a reachable Airflow the deployment is not triggered,
    which is said, not hidden."""
    from maestro.platform.airflow_api import AirflowAPIError, platform_client
    from maestro.vocabulary import champion_asset_name

    name = champion_asset_name(done["model"])
    try:
        event = platform_client(settings).asset_event(name, {**done, "via": "cli"})
    except AirflowAPIError as error:
        echo(f"warning: no asset event on {name}, so no deployment starts by itself: {error}")
        return
    echo(f"asset event {event['id']} on {name} at {settings.airflow_api_url}")

"""`maestro trigger`: start a model's training on the platform from CI, through Airflow's REST
API, and optionally follow it to an exit code a pipeline can act on."""

from __future__ import annotations

import json
from collections.abc import Callable
from enum import IntEnum

from maestro.config import Settings
from maestro.platform.airflow_api import AirflowAPIError, platform_client
from maestro.waiting import wait_for


class Outcome(IntEnum):
    SUCCESS = 0
    FAILED = 1
    TIMEOUT = 2
    WAITING_FOR_APPROVAL = 3
    REFUSED = 4  # Airflow refused the credentials, the user's role, or the request


def parse_conf(pairs: list[str]) -> dict:
    """`k=v` pairs; a value that reads as JSON (numbers, true, lists) is taken as such."""
    conf = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--conf {pair!r}: expected KEY=VALUE")
        try:
            conf[key] = json.loads(value)
        except ValueError:
            conf[key] = value
    return conf


def refusal(error: AirflowAPIError, settings: Settings, dag_id: str) -> str:
    text = str(error)
    if "HTTP 401" in text:
        return (
            f"Airflow at {settings.airflow_api_url} refused the credentials of "
            f"{settings.airflow_username!r} (HTTP 401): set MAESTRO_AIRFLOW_USERNAME and "
            "MAESTRO_AIRFLOW_PASSWORD"
        )
    if "HTTP 403" in text:
        return (
            f"{settings.airflow_username!r} may not trigger {dag_id} (HTTP 403): the user needs "
            "Airflow's User role or above"
        )
    return text


def trigger_training(
    settings: Settings,
    model: str,
    conf: dict,
    wait: bool,
    timeout: float,
    echo: Callable[[str], None],
    poll: float = 5.0,
) -> Outcome:
    """Start `train_<model>` with `trigger=ci`; with `wait`, follow it until it ends, times
    out, or waits for a human's decision."""
    dag_id = f"train_{model}"
    ui = settings.airflow_api_url.rstrip("/")
    try:
        airflow = platform_client(settings)
        run_id = airflow.trigger(dag_id, {**conf, "trigger": "ci"})
    except AirflowAPIError as error:
        echo(f"error: {refusal(error, settings, dag_id)}")
        return Outcome.REFUSED
    echo(f"triggered      {dag_id} run {run_id}")
    echo(f"follow it at   {ui}/dags/{dag_id}/runs/{run_id}")
    if not wait:
        return Outcome.SUCCESS
    last: dict = {}

    def finished() -> Outcome | None:
        last.update(airflow.run(dag_id, run_id))
        if last["state"] == "success":
            echo(f"finished       {dag_id} run {run_id}: success")
            return Outcome.SUCCESS
        if last["state"] == "failed":
            echo(f"finished       {dag_id} run {run_id}: FAILED (see its task logs in the UI)")
            return Outcome.FAILED
        states = {t["task_id"]: t["state"] for t in airflow.task_instances(dag_id, run_id)}
        if states.get("request_approval") == "deferred":
            echo(
                f"waiting for a decision: approve on {ui}/dags/{dag_id}/runs/{run_id}/tasks/"
                f"request_approval/required_actions, or `maestro approve {model} VERSION`"
            )
            return Outcome.WAITING_FOR_APPROVAL
        return None

    def answered() -> tuple[Outcome] | None:  # SUCCESS is 0: wait_for takes a truthy answer
        outcome = finished()
        return None if outcome is None else (outcome,)

    try:
        return wait_for(answered, timeout=timeout, interval=poll, what=f"{dag_id} run {run_id}")[0]
    except TimeoutError:
        echo(f"timed out after {timeout:g}s: {dag_id} run {run_id} is still {last['state']}")
        return Outcome.TIMEOUT

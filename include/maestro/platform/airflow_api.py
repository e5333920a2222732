"""A small client of Airflow's public REST API (v2): how CI, the CLI and the benchmarks trigger
runs and post asset events."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

import httpx

from maestro.config import Settings
from maestro.platform.airflow_env import task_label
from maestro.waiting import wait_for
from maestro.web import client

TERMINAL_STATES = ("success", "failed")


class AirflowAPIError(RuntimeError):
    """A request Airflow refused or that did not reach it; the message names the request."""


class AirflowClient:
    def __init__(
        self,
        base_url: str,
        username: str,
        password: str,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._http = client(self.base_url, timeout=30, transport=transport)
        self._token: str | None = None

    def call(self, path: str, method: str = "GET", body: dict | None = None) -> Any:
        """One request (signing in first); raises AirflowAPIError naming the request and
        Airflow's answer, or why there was none."""
        if self._token is None and path != "/auth/token":
            self._token = self.call("/auth/token", "POST", self._credentials)["access_token"]
        headers = {"Authorization": f"Bearer {self._token}"} if self._token else {}
        try:
            response = self._http.request(method, path, json=body, headers=headers)
        except httpx.TransportError as error:
            raise AirflowAPIError(f"{method} {self.base_url}{path}: {error!r}") from None
        if response.is_error:
            raise AirflowAPIError(
                f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}"
            )
        return response.json() if response.content else None

    def dag_ids(self) -> set[str]:
        return {dag["dag_id"] for dag in self.call("/api/v2/dags?limit=1000")["dags"]}

    def unpause(self, dag_id: str) -> None:
        self.call(f"/api/v2/dags/{dag_id}", "PATCH", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict | None = None) -> str:
        """Start a manual run now; return its run id."""
        run = self.call(
            f"/api/v2/dags/{dag_id}/dagRuns", "POST", {"logical_date": None, "conf": conf or {}}
        )
        return run["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict]:
        """The DAG's runs, oldest first."""
        return self.call(f"/api/v2/dags/{dag_id}/dagRuns?order_by=run_after&limit=100")["dag_runs"]

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.call(f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{quote(run_id)}/taskInstances"
        return self.call(path)["task_instances"]

    def asset_event(self, name: str, extra: dict) -> dict:
        """Record an event on the asset called `name` (its consumers' DAGs then run)."""
        assets = self.call(f"/api/v2/assets?name_pattern={quote(name)}&limit=100")["assets"]
        ids = [asset["id"] for asset in assets if asset["name"] == name]
        if not ids:
            raise AirflowAPIError(
                f"Airflow at {self.base_url} has no asset named {name!r}: is the DAG that "
                "declares it parsed?"
            )
        return self.call("/api/v2/assets/events", "POST", {"asset_id": ids[0], "extra": extra})

    def asset_events(self, name: str) -> list[dict]:
        query = f"name_pattern={quote(name)}&order_by=timestamp"
        events = self.call(f"/api/v2/assets/events?{query}")["asset_events"]
        return [event for event in events if event["name"] == name]

    def wait(
        self,
        dag_id: str,
        run_id: str,
        timeout: float,
        poll: float = 2.0,
        on_state: Callable[[str, str], None] | None = None,
    ) -> dict:
        """Poll a run until it succeeds or fails; return it (raises TimeoutError).
        `on_state(task_label, state)` hears every change of a task's state, as with
        `watch_dag_test` (e.g. to answer an approval)."""
        seen: dict[str, str | None] = {}

        def finished() -> dict | None:
            run = self.run(dag_id, run_id)
            if on_state is not None:
                for ti in self.task_instances(dag_id, run_id):
                    label = task_label(ti["task_id"], ti["map_index"])
                    if seen.get(label, "") != ti["state"]:
                        seen[label] = ti["state"]
                        on_state(label, ti["state"])
            return run if run["state"] in TERMINAL_STATES else None

        return wait_for(
            finished, timeout=timeout, interval=poll, what=f"{dag_id} run {run_id} not finished"
        )


def platform_client(settings: Settings) -> AirflowClient:
    """A client of the configured Airflow (`MAESTRO_AIRFLOW_API_URL`); without a configured
    password, the one `maestro up` generated in the state folder."""
    password = settings.airflow_password
    if password is None:
        from maestro.platform.credentials import passwords_file

        path = passwords_file(settings.home)
        try:
            password = json.loads(path.read_text())[settings.airflow_username]
        except (OSError, KeyError, ValueError) as error:
            raise AirflowAPIError(
                f"no password for {settings.airflow_username!r}: set MAESTRO_AIRFLOW_PASSWORD "
                f"or start the platform with `maestro up` ({path}: {error!r})"
            ) from None
    return AirflowClient(settings.airflow_api_url, settings.airflow_username, password)

"""A small client of Airflow's public REST API (v2): how CI and the benchmarks trigger runs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

TERMINAL_STATES = ("success", "failed")


class AirflowAPIError(RuntimeError):
    pass


class AirflowClient:
    def __init__(self, base_url: str, username: str, password: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._credentials = {"username": username, "password": password}
        self._token: str | None = None

    def call(self, path: str, method: str = "GET", body: dict | None = None) -> Any:
        """One request; raises AirflowAPIError naming the request and Airflow's answer."""
        if self._token is None and path != "/auth/token":
            self._token = self.call("/auth/token", "POST", self._credentials)["access_token"]
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")[:500]
            raise AirflowAPIError(f"{method} {path}: HTTP {error.code}: {detail}") from None

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

    def run(self, dag_id: str, run_id: str) -> dict:
        return self.call(f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances"
        return self.call(path)["task_instances"]

    def respond(
        self, dag_id: str, run_id: str, task_id: str, options: list[str], map_index: int = -1
    ) -> dict:
        """Answer a human-in-the-loop task (what the Required Actions page does)."""
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id)}/taskInstances/"
            f"{task_id}/{map_index}/hitlDetails"
        )
        return self.call(path, "PATCH", {"chosen_options": options, "params_input": {}})

    def wait(self, dag_id: str, run_id: str, timeout: float, poll: float = 2.0) -> dict:
        """Poll a run until it succeeds or fails; return it (raises TimeoutError)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.run(dag_id, run_id)
            if run["state"] in TERMINAL_STATES:
                return run
            time.sleep(poll)
        raise TimeoutError(f"{dag_id} run {run_id} not finished after {timeout:.0f}s")

"""The Airflow REST client against a stand-in for Airflow's API (httpx.MockTransport): sign-in,
bearer tokens, errors that name the request, waiting on a run, asset events by exact name."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from maestro.platform.airflow_api import AirflowAPIError, AirflowClient

RUN = "manual__2026-11-27T06:00:00+00:00"


class FakeAirflow:
    """Answers like Airflow's public API v2 for one DAG run that finishes after a few polls."""

    def __init__(self, polls_until_done: int = 2) -> None:
        self.seen: list[httpx.Request] = []
        self.polls_until_done = polls_until_done

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        path = request.url.path
        if path == "/auth/token":
            body = json.loads(request.content)
            if body != {"username": "admin", "password": "pw"}:  # pragma: allowlist secret
                return httpx.Response(401, json={"detail": "Invalid credentials"})
            return httpx.Response(201, json={"access_token": "t0k"})
        if request.headers.get("Authorization") != "Bearer t0k":
            return httpx.Response(401, json={"detail": "Not authenticated"})
        if path == f"/api/v2/dags/train_demo/dagRuns/{RUN}":
            self.polls_until_done -= 1
            return httpx.Response(
                200, json={"state": "running" if self.polls_until_done else "success"}
            )
        if path.endswith("/taskInstances"):
            state = "deferred" if self.polls_until_done else "success"
            return httpx.Response(
                200,
                json={
                    "task_instances": [
                        {"task_id": "tune", "map_index": 1, "state": "success"},
                        {"task_id": "request_approval", "map_index": -1, "state": state},
                    ]
                },
            )
        if path == "/api/v2/assets":
            assets = [{"id": 7, "name": "demo_champion_v2"}, {"id": 3, "name": "demo_champion"}]
            return httpx.Response(200, json={"assets": assets})
        if path == "/api/v2/assets/events":
            return httpx.Response(200, json={"id": 11, **json.loads(request.content)})
        return httpx.Response(404, json={"detail": f"no route {path}"})


def client(fake: FakeAirflow, password: str = "pw") -> AirflowClient:
    return AirflowClient(
        "http://airflow:8080/", "admin", password, transport=httpx.MockTransport(fake)
    )


def test_signs_in_once_and_sends_the_token():
    fake = FakeAirflow(polls_until_done=5)
    airflow = client(fake)
    airflow.run("train_demo", RUN)
    airflow.run("train_demo", RUN)
    assert [r.url.path for r in fake.seen].count("/auth/token") == 1
    assert fake.seen[-1].headers["Authorization"] == "Bearer t0k"
    assert "%2B00%3A00" in str(fake.seen[-1].url)  # the run id is quoted into the path


def test_a_refusal_names_the_request_and_airflows_answer():
    with pytest.raises(AirflowAPIError, match=r"POST /auth/token: HTTP 401: .*Invalid credentials"):
        client(FakeAirflow(), password="wrong").run("train_demo", RUN)  # pragma: allowlist secret
    with pytest.raises(AirflowAPIError, match=r"GET /api/v2/dags/nope: HTTP 404"):
        client(FakeAirflow()).call("/api/v2/dags/nope")


def test_no_answer_at_all_is_an_api_error_too():
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)

    airflow = AirflowClient(
        "http://airflow:8080", "admin", "pw", transport=httpx.MockTransport(refuse)
    )
    with pytest.raises(AirflowAPIError, match="POST http://airflow:8080/auth/token: ConnectError"):
        airflow.dag_ids()


def test_wait_reports_each_task_state_change_once_and_returns_the_finished_run():
    heard: list[tuple[str, str]] = []
    run = client(FakeAirflow(polls_until_done=3)).wait(
        "train_demo", RUN, timeout=10, poll=0.01, on_state=lambda *change: heard.append(change)
    )
    assert run["state"] == "success"
    assert heard == [
        ("tune[1]", "success"),
        ("request_approval", "deferred"),
        ("request_approval", "success"),
    ]


def test_wait_gives_up_with_the_run_named():
    with pytest.raises(
        TimeoutError, match=re.escape(f"train_demo run {RUN} not finished after 0s")
    ):
        client(FakeAirflow(polls_until_done=10**6)).wait("train_demo", RUN, timeout=0.05, poll=0.01)


def test_an_asset_event_goes_to_the_asset_with_exactly_that_name():
    event = client(FakeAirflow()).asset_event("demo_champion", {"champion": "3"})
    assert event == {"id": 11, "asset_id": 3, "extra": {"champion": "3"}}
    with pytest.raises(AirflowAPIError, match="no asset named 'bike_champion'"):
        client(FakeAirflow()).asset_event("bike_champion", {})

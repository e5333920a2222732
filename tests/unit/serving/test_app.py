"""The model server's answers to bad requests, through Starlette's TestClient (the app in this
process, the champion from a real registry): one 4xx with a message naming the record and
field, never a 500, and the server goes on."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from maestro.serving.app import create_app

PREDICT = "/v1/models/demo/predict"


@pytest.fixture
def client(settings, demo_champion, monkeypatch):
    _, frame = demo_champion
    monkeypatch.setenv("MAESTRO_PREDICTION_LOG", "off")
    monkeypatch.setenv("MAESTRO_SERVING_TOKEN", "s3cret")
    monkeypatch.setenv("MAESTRO_SERVING_MAX_ROWS", "50")
    from maestro.config import get_settings

    get_settings.cache_clear()
    app = create_app(get_settings(), ["demo"])
    row = json.loads(
        frame.drop(columns=["customer_id", "event_timestamp", "churned"])
        .head(1)
        .to_json(orient="records")
    )[0]
    with TestClient(app, headers={"Authorization": "Bearer s3cret"}) as test_client:
        yield test_client, row


def refusal(response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]


def test_a_good_record_and_batch_are_scored(client):
    http, row = client
    one = http.post(PREDICT, json=row)
    assert one.status_code == 200 and one.json()["version"] == "1"
    assert len(http.post(PREDICT, json=[row, row]).json()["predictions"]) == 2


@pytest.mark.parametrize(
    ("change", "status", "message"),
    [
        (
            lambda r: {k: v for k, v in r.items() if k != "age"},
            422,
            "record 0: missing field 'age'",
        ),
        (lambda r: {**r, "shoe_size": 44}, 422, "record 0: unknown field 'shoe_size'"),
        (lambda r: {**r, "age": "old"}, 422, "record 0: field 'age'"),
        (lambda r: {**r, "age": None}, 422, "record 0: field 'age' may not be null"),
        (lambda r: [r, {**r, "region": 7}], 422, "record 1: field 'region'"),
        (lambda r: [], 422, "empty batch"),
        (lambda r: [r] * 51, 413, "over the limit of 50"),
        (lambda r: "just a string", 422, "body must be a record"),
    ],
)
def test_bad_records_get_one_clear_4xx(client, change, status, message):
    http, row = client
    assert message in refusal(http.post(PREDICT, json=change(row)), status)


def test_bad_bodies_and_unknown_routes(client):
    http, row = client
    assert "not valid JSON" in refusal(
        http.post(PREDICT, content=b"{", headers={"Content-Type": "application/json"}), 400
    )
    nan = json.dumps({**row, "age": float("nan")}).encode()  # Python writes NaN; JSON has none
    nan_answer = http.post(PREDICT, content=nan, headers={"Content-Type": "application/json"})
    assert refusal(nan_answer, 422) == "NaN is not a number this server accepts"
    assert "application/json" in refusal(
        http.post(PREDICT, content=b"age=3", headers={"Content-Type": "text/plain"}), 415
    )
    assert "unknown model 'churn'" in refusal(http.post("/v1/models/churn/predict", json=row), 404)
    assert "version 9 is not in the serving plan" in refusal(
        http.post("/v1/models/demo/versions/9/predict", json=row), 404
    )
    assert http.post(PREDICT, json=row).status_code == 200  # and the server goes on


def test_the_token_guards_predictions_the_plan_and_metrics_but_not_health(client):
    http, row = client
    anonymous = {"Authorization": ""}
    assert (
        refusal(http.post(PREDICT, json=row, headers=anonymous), 401)
        == "missing or wrong bearer token"
    )
    assert http.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401
    for open_path in ("/health", "/ready"):
        assert http.get(open_path, headers=anonymous).status_code == 200
    assert http.get("/metrics", headers=anonymous).status_code == 401  # it names the models
    assert "maestro_model_version_info" in http.get("/metrics").text
    described = http.get("/v1/models").json()["models"]["demo"]["routes"][0]
    assert described["path"] == "booster" and described["fallback"] is None
    ready = http.get("/ready", headers=anonymous).json()
    assert ready == {"ready": True}  # what the plan is, and its errors, name models
    assert http.get("/ready").json()["plan"] == http.get("/v1/models").json()["plan"]


def test_a_plan_rewritten_with_the_same_size_and_time_is_applied(client):
    """The server once compared the plan file's size and modification time only."""
    import os
    import time

    from maestro.config import get_settings

    http, _ = client
    path = get_settings().plan_path
    before = http.get("/v1/models").json()
    stat = path.stat()
    text = path.read_text()
    assert '"weight": 100.0' in text
    path.write_text(text.replace('"weight": 100.0', '"weight": 200.0'))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (stat.st_size, stat.st_mtime_ns)
    deadline = time.monotonic() + 10
    while http.get("/v1/models").json()["plan"] == before["plan"]:
        assert time.monotonic() < deadline, "the rewritten plan was not applied"
        time.sleep(0.1)


def test_building_the_app_starts_nothing_and_its_lifespan_owns_the_log_writer(
    settings, demo_champion, monkeypatch, tmp_path
):
    """Importing and building the app start no process and write nothing; the lifespan
    starts the prediction log's writer and stops it on the way out."""
    import psutil

    from maestro.config import get_settings

    log = tmp_path / "prediction_log"
    monkeypatch.setenv("MAESTRO_PREDICTION_LOG", str(log))
    get_settings.cache_clear()
    me = psutil.Process()
    before = {p.pid for p in me.children()}
    app = create_app(get_settings(), ["demo"])
    assert {p.pid for p in me.children()} == before and not log.exists()
    with TestClient(app):
        writers = [p for p in me.children() if p.pid not in before]
        assert any("log_writer" in " ".join(p.cmdline()) for p in writers), writers
    assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in writers)

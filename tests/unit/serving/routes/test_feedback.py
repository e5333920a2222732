"""Ground truth through the model server's feedback route (the app in this process, the
champion from a real registry, the prediction log's real writer): labels for earlier
predictions are kept, bad ones refused one by one with the reason, the rest kept."""

from __future__ import annotations

import json
import time

import pytest
from fastapi.testclient import TestClient

from maestro.logs.labels import read_labels
from maestro.serving.app import create_app

PREDICT, FEEDBACK = "/v1/models/demo/predict", "/v1/models/demo/feedback"


@pytest.fixture
def client(settings, demo_champion, monkeypatch):
    _, frame = demo_champion
    monkeypatch.setenv("MAESTRO_SERVING_TOKEN", "s3cret")
    from maestro.config import get_settings

    get_settings.cache_clear()
    app = create_app(get_settings(), ["demo"])
    rows = json.loads(
        frame.drop(columns=["customer_id", "event_timestamp", "churned"])
        .head(3)
        .to_json(orient="records")
    )
    with TestClient(app, headers={"Authorization": "Bearer s3cret"}) as test_client:
        yield test_client, rows, get_settings()


def test_labels_for_answered_requests_are_kept_and_bad_ones_refused_per_row(client):
    http, rows, settings = client
    single = http.post(PREDICT, json=rows[0]).json()["request_id"]
    batch = http.post(PREDICT, json=rows).json()["request_id"]
    answer = http.post(
        FEEDBACK,
        json=[
            {"request_id": single, "label": 1},
            {"request_id": batch, "row": 2, "label": 0},
            {"request_id": "nope", "label": 1},
            {"request_id": batch, "row": 3, "label": 1},
            {"request_id": single, "label": "yes"},
            {"request_id": single, "label": 1, "colour": "red"},
        ],
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accepted"] == 2
    reasons = {r["index"]: r["reason"] for r in body["refused"]}
    assert reasons[2] == "unknown request_id 'nope' for demo"
    assert reasons[3].startswith("row 3 is out of range")
    assert reasons[4].startswith("label must be 0 or 1")
    assert reasons[5].startswith("unknown fields ['colour']")
    kept = read_labels(settings, "demo").sort_values("row")
    assert kept[["request_id", "row", "label"]].values.tolist() == [
        [single, 0, 1.0],
        [batch, 2, 0.0],
    ]
    metrics = http.get("/metrics").text
    assert 'maestro_feedback_labels_total{model="demo"} 2.0' in metrics
    assert 'maestro_feedback_refused_total{model="demo"} 4.0' in metrics


def test_only_unknown_ids_is_a_404_only_bad_labels_a_422_and_auth_is_required(client):
    http, rows, _ = client
    request_id = http.post(PREDICT, json=rows[0]).json()["request_id"]
    assert http.post(FEEDBACK, json={"request_id": "nope", "label": 1}).status_code == 404
    assert http.post(FEEDBACK, json={"request_id": request_id, "label": 3}).status_code == 422
    assert http.post(FEEDBACK, json={"request_id": request_id}).status_code == 422
    anonymous = http.post(
        FEEDBACK, json={"request_id": request_id, "label": 1}, headers={"Authorization": ""}
    )
    assert anonymous.status_code == 401


def test_an_id_the_server_no_longer_remembers_is_found_in_the_prediction_log(client):
    http, rows, settings = client
    request_id = http.post(PREDICT, json=rows).json()["request_id"]
    server = http.app.state.server
    server.recent.clear()  # as after a restart: only the log knows the request
    deadline = time.monotonic() + 10
    while True:  # the writer gets the request within a second
        answer = http.post(FEEDBACK, json={"request_id": request_id, "row": 2, "label": 1})
        if answer.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert answer.status_code == 200, answer.text
    assert len(read_labels(settings, "demo")) == 1


def test_maestro_feedback_loads_a_file_by_request_id_or_by_entity_and_time(
    client, tmp_path, capsys
):
    import pandas as pd

    from maestro.logs.scores import write_scores
    from maestro.platform.cli import main

    http, rows, settings = client
    request_id = http.post(PREDICT, json=rows).json()["request_id"]
    server = http.app.state.server
    server.log.flush()
    by_request = tmp_path / "labels.csv"
    pd.DataFrame(
        {"request_id": [request_id, request_id, "nope"], "row": [0, 1, 0], "churned": [1, 0, 1]}
    ).to_csv(by_request, index=False)
    deadline = time.monotonic() + 10  # the writer has the request within a second
    while main(["feedback", "demo", str(by_request)]) != 0 and time.monotonic() < deadline:
        time.sleep(0.3)
    out = capsys.readouterr().out
    assert "accepted       2 labels for demo" in out
    assert "refused        row 2 (nope): unknown request_id 'nope' for demo" in out

    stamps = pd.to_datetime(["2025-06-01 10:00", "2025-06-01 11:00"], utc=True)
    scores = pd.DataFrame(
        {
            "customer_id": [7, 8],
            "event_timestamp": stamps,
            "prediction": [0.2, 0.9],
            "model_version": "1",
            "scored_at": pd.Timestamp.now(tz="UTC"),
        }
    )
    write_scores(settings, "demo", "2025-06-01", scores)
    by_entity = tmp_path / "batch_labels.parquet"
    pd.DataFrame({"customer_id": [7, 9], "event_timestamp": stamps, "label": [0, 1]}).to_parquet(
        by_entity
    )
    assert main(["feedback", "demo", str(by_entity)]) == 0
    out = capsys.readouterr().out
    assert "accepted       1 labels" in out and "no batch score of customer_id=9" in out
    kept = read_labels(settings, "demo")
    assert len(kept) == 3 and kept["entity"].dropna().tolist() == ["7"]
    assert main(["feedback", "demo", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv: no such file" in capsys.readouterr().out

    # each row is judged alone: a row number that is not whole, or missing, or not a number,
    # refuses that row, never the file (and 1.7 is not truncated to 1)
    rows_file = tmp_path / "rows.csv"
    rows_file.write_text(
        f"request_id,row,churned\n{request_id},1.7,1\n{request_id},,1\n{request_id},x,0\n"
        f"{request_id},1,0\n"
    )
    assert main(["feedback", "demo", str(rows_file)]) == 0
    out = capsys.readouterr().out
    assert "accepted       1 labels" in out, out
    assert out.count("row must be a whole number from 0") == 3, out
    for name, content in (("quote.csv", 'request_id,churned\n"abc,1\n'), ("binary.csv", None)):
        path = tmp_path / name
        if content is None:
            path.write_bytes(bytes(range(256)) * 4)
        else:
            path.write_text(content)
        assert main(["feedback", "demo", str(path)]) == 2
        out = capsys.readouterr().out
        assert f"{name}: " in out and "Traceback" not in out, out

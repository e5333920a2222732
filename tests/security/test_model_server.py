"""The model server against a hostile client, for real: `maestro serve` on loopback with a
token, versions from a real MLflow registry, raw HTTP. Whoever reaches the server is
untrusted: nothing they send causes a 500, loses another request's log entry, grows memory or
metric series without bound, or tells them which models exist without the token."""

from __future__ import annotations

import http.client
import json
import socket
import time

import pytest

from maestro.logs.predictions import read_log
from tests.integration.test_serving import ROW, registry, server  # noqa: F401 - the fixture

pytestmark = pytest.mark.slow

TOKEN = "hostile-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def call(target, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    host, port = target.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    conn.request(method, path, body, {"Content-Type": "application/json", **(headers or {})})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, data


def predict(target, body: bytes, **headers: str):
    status, data = call(target, "POST", "/v1/models/demo/predict", body, {**AUTH, **headers})
    return status, json.loads(data) if data else None


@pytest.fixture(scope="module")
def hostile(registry):  # noqa: F811 - pytest's fixture, imported above
    with server(
        registry,
        MAESTRO_SERVING_TOKEN=TOKEN,
        MAESTRO_SERVING_HEADER_TIMEOUT_SECONDS="2",
        MAESTRO_SERVING_BODY_TIMEOUT_SECONDS="2",
    ) as (process, target):
        yield process, target, registry


@pytest.mark.parametrize(
    ("field", "raw", "status", "message"),
    [
        ("region", '"\\ud800"', 422, "'region' holds a NUL character or a lone surrogate"),
        ("region", '"no\\u0000rth"', 422, "'region' holds a NUL character"),
        ("age", "9223372036854775808", 422, "'age' is out of the 64-bit integer range"),
        ("age", "1" + "0" * 400, 422, "'age' is out of the 64-bit integer range"),
        ("age", "1" + "0" * 5000, 400, "not valid JSON"),
        ("income", "1e400", 422, "'income' is infinite"),
    ],
)
def test_values_no_sink_can_hold_are_refused_naming_the_field(hostile, field, raw, status, message):
    """Each was answered 200 once, and then its log entry blocked every later one."""
    _, target, _ = hostile
    record = json.dumps({**ROW, field: "RAW"}).replace('"RAW"', raw)
    got, answer = predict(target, record.encode())
    assert (got, message in answer["error"]) == (status, True), answer


def test_deep_nesting_unknown_names_and_media_types_get_4xx_and_bounded_metrics(hostile):
    _, target, _ = hostile
    assert predict(target, b"[" * 100_000)[0] == 400
    assert predict(target, b'{"a":' * 5000 + b"1" + b"}" * 5000)[0] == 400
    assert (
        predict(target, json.dumps(ROW).encode(), **{"Content-Type": "APPLICATION/JSON"})[0] == 200
    )
    latin = predict(
        target, json.dumps(ROW).encode(), **{"Content-Type": "application/json; charset=latin-1"}
    )
    assert latin[0] == 415 and "UTF-8" in latin[1]["error"]

    before = len(call(target, "GET", "/metrics", headers=AUTH)[1])
    for i in range(300):
        status, data = call(target, "POST", f"/v1/models/m{i}/predict", b"{}", AUTH)
        assert status == 404 and b"demo" not in data  # no list of what is served
    after = call(target, "GET", "/metrics", headers=AUTH)[1]
    assert len(after) - before < 2_000, "each unknown name must not add a series"
    assert b'model="m1"' not in after

    # which models exist is for the token's holders: readiness of a model needs it too
    assert call(target, "GET", "/v2/models/demo/ready")[0] == 401
    assert call(target, "GET", "/v2/models/demo/ready", headers=AUTH)[0] == 200
    status, data = call(target, "GET", "/v2/models/nope/ready", headers=AUTH)
    assert status == 404 and b"demo" not in data


def test_clients_that_leave_or_dribble_are_cut_off_and_never_counted_as_server_errors(hostile):
    _, target, _ = hostile
    host, port = target.base_url.removeprefix("http://").split(":")
    head = (
        f"POST /v1/models/demo/predict HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    ).encode()
    # a client that sends half its body and leaves
    gone = socket.create_connection((host, int(port)))
    gone.sendall(head + b'{"age": 4')
    time.sleep(0.3)
    gone.close()
    # a client that sends half its body and waits: 408 after the body timeout, then closed
    slow_body = socket.create_connection((host, int(port)), timeout=10)
    slow_body.sendall(head + b'{"age": 4')
    started = time.monotonic()
    answer = slow_body.recv(4096)
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert slow_body.recv(4096) == b"" and time.monotonic() - started < 5
    # clients that dribble their headers a byte a second: closed after the header timeout
    dribblers = [socket.create_connection((host, int(port)), timeout=10) for _ in range(20)]
    started = time.monotonic()
    closed = set()
    while len(closed) < len(dribblers) and time.monotonic() - started < 8:
        for i, sock in enumerate(dribblers):
            if i in closed:
                continue
            try:
                sock.sendall(b"P" if time.monotonic() - started < 0.5 else b"X")
            except OSError:
                closed.add(i)
        time.sleep(0.5)
    assert len(closed) == len(dribblers), f"{len(dribblers) - len(closed)} dribblers still open"
    assert time.monotonic() - started < 6

    metrics = target.metrics()
    errors = {
        labels: v for (name, labels), v in metrics.items() if name == "maestro_request_errors_total"
    }
    # the client that left, and the one whose body timed out (the server hung up on it)
    assert errors.get((("model", "demo"), ("reason", "client_disconnected"))) == 2, errors
    assert not any(dict(labels)["reason"] == "500" for labels in errors), errors
    assert predict(target, json.dumps(ROW).encode())[0] == 200  # and the server goes on


def test_feedback_names_its_model_and_every_good_request_is_logged(hostile, tmp_path):
    process, target, home = hostile
    status, answer = predict(target, json.dumps(ROW).encode())
    assert status == 200
    request_id = answer["request_id"]
    other = call(
        target,
        "POST",
        "/v1/models/other/feedback",
        json.dumps({"request_id": request_id, "label": 1}).encode(),
        AUTH,
    )
    assert other[0] == 404
    mine = call(
        target,
        "POST",
        "/v1/models/demo/feedback",
        json.dumps(
            [{"request_id": request_id, "label": "0"}, {"request_id": request_id, "label": "1"}]
        ).encode(),
        AUTH,
    )
    assert mine[0] == 200 and json.loads(mine[1])["accepted"] == 2
    # the earlier tests' refused values never reached the log: nothing is set aside, and
    # every answered request is there once the server has written it
    deadline = time.monotonic() + 10
    while request_id not in set(read_log(str(home / "prediction_log"), "demo")["request_id"]):
        assert time.monotonic() < deadline, "the answered request was not logged"
        time.sleep(0.2)
    assert not list((home / "prediction_log" / "_dead_letter").glob("*.jsonl"))
    metrics = target.metrics()
    assert metrics[("maestro_prediction_log_dead_letter_entries_total", ())] == 0
    assert metrics[("maestro_prediction_log_written_rows_total", ())] >= 1


def test_a_server_whose_registry_does_not_answer_says_so_and_stops_at_once(tmp_path):
    """It once waited about 250 s, silent and deaf to SIGTERM, in MLflow's own retries. It
    still does not listen without its models (whatever listens is sent requests), but it says
    why within seconds, tries again, and stops on SIGTERM at once."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    from maestro.web import free_port

    port, nowhere = free_port(), free_port()
    env = {
        **os.environ,
        "MAESTRO_HOME": str(tmp_path / "home"),
        "MAESTRO_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{nowhere}",
        "MAESTRO_SERVING_WORKERS": "1",
    }
    log = tmp_path / "serve.log"
    command = [str(Path(sys.executable).with_name("maestro")), "serve", "demo", "--port", str(port)]
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while "trying again" not in log.read_text():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        while log.read_text().count("trying again") < 2:  # it goes on trying
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        said = log.read_text()
        assert "not applied" in said and "nothing is served yet" in said, said
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        process.wait(timeout=15)
        assert time.monotonic() - started < 5
    finally:
        if process.poll() is None:
            process.kill()

"""The model server for real: `maestro serve` on loopback, versions from a real MLflow registry,
requests over HTTP. Malformed requests, blue-green and canary rollouts under load, a broken
canary rolled back, and a restart that keeps the plan and every acknowledged prediction."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Self

import numpy as np
import pandas as pd
import pytest

from maestro import tracking
from maestro.config import Settings
from maestro.deploy.strategies import deploy
from maestro.deploy.target import DeployError, ServerTarget
from maestro.logs.predictions import read_log
from maestro.serving.plan import ModelPlan, Route
from maestro.serving.scorer import example_rows
from maestro.waiting import wait_for
from maestro.web import free_port
from tests.support import DAGS

pytestmark = pytest.mark.slow

ROW = {
    "age": 42,
    "income": 62939.47,
    "tenure_months": 108,
    "num_products": 1,
    "balance": 841.04,
    "support_calls": 3,
    "region": "south",
    "plan": "basic",
    "group": "a",
}


def register_versions(settings: Settings) -> None:
    """demo v1 (logistic regression), v2 (LightGBM) and v3, which loads and validates requests
    but fails to score them."""
    import mlflow
    from mlflow.models import infer_signature

    from maestro.data.synthetic import generate
    from maestro.spec import get_spec
    from maestro.training.families import build_estimator, fit
    from maestro.training.stages import own_types, serving_requirements
    from tests.support import register_version

    spec = get_spec("demo", settings)
    frame = generate(3000)
    X, y = frame[spec.feature_names], frame[spec.target.name].to_numpy()
    mlc = tracking.client(settings)
    experiment = tracking.experiment_id(settings, "demo")
    for family, params in (("logistic_regression", {"C": 1.0}), ("lightgbm", {"n_estimators": 40})):
        model = fit(build_estimator(spec, family, params), spec, family, X, y)
        register_version(settings, spec, model, frame, alias=None)
    # v3 never saw region "south" and refuses unknown categories: it answers its own input
    # example (smoke tests pass) and fails every request from the south
    import lightgbm
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    north = frame[frame["region"] != "south"]
    numeric = [f.name for f in spec.features if f.type != "category"]
    prep = ColumnTransformer(
        [("num", "passthrough", numeric), ("cat", OrdinalEncoder(), spec.categorical_features)]
    )
    model = lightgbm.LGBMClassifier(n_estimators=5, verbose=-1)
    broken = Pipeline([("prep", prep), ("model", model)]).fit(
        north[spec.feature_names], north[spec.target.name]
    )
    example = north[spec.feature_names].head(5)
    with mlflow.start_run(experiment_id=experiment):
        logged = mlflow.sklearn.log_model(
            broken,
            name="model",
            signature=infer_signature(example, broken.predict_proba(example)),
            input_example=example,
            pyfunc_predict_fn="predict_proba",
            skops_trusted_types=own_types(broken),
            pip_requirements=serving_requirements(broken),
        )
    mlflow.register_model(logged.model_uri, "demo")
    mlc.set_registered_model_alias("demo", "champion", "1")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    home = tmp_path_factory.mktemp("serving") / "home"
    settings = Settings(home=home)
    register_versions(settings)
    return home


@contextmanager
def server(home: Path, model: str = "demo", **env_overrides: str):
    """`maestro serve MODEL` on a free port; yields (process, ServerTarget); SIGTERM at the end."""
    port = free_port()
    # one server process unless a test asks for more (the default is one per CPU)
    env = {**os.environ, "MAESTRO_HOME": str(home), "MAESTRO_SERVING_WORKERS": "1", **env_overrides}
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("MLFLOW_REGISTRY_URI", None)
    log = (home / f"serve-{port}.log").open("w")
    command = [str(Path(sys.executable).with_name("maestro")), "serve", model, "--port", str(port)]
    process = subprocess.Popen(
        command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    settings = Settings(home=home, serving_plan=env_overrides.get("MAESTRO_SERVING_PLAN"))
    target = ServerTarget(
        f"http://127.0.0.1:{port}", settings.plan_path, env.get("MAESTRO_SERVING_TOKEN")
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (home / f"serve-{port}.log").read_text()[-3000:]
            try:
                if target.request("GET", "/ready")[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the server did not get ready in 90 s"
            time.sleep(0.3)
        yield process, target
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        log.close()


class LoadLoop:
    """Single-row requests back to back over one keep-alive connection, in a thread; records
    (status, version) of every answer."""

    def __init__(self, target: ServerTarget) -> None:
        self.target = target
        self.answers: list[tuple[int, str | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        host, port = self.target.base_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        body = json.dumps(ROW)
        while not self._stop.is_set():
            try:
                conn.request(
                    "POST", "/v1/models/demo/predict", body, {"Content-Type": "application/json"}
                )
                response = conn.getresponse()
                answer = json.loads(response.read())
                self.answers.append((response.status, answer.get("version")))
            except (OSError, http.client.HTTPException) as error:
                self.answers.append((0, repr(error)))
                conn = http.client.HTTPConnection(host, int(port), timeout=10)

    def failures(self) -> list[tuple[int, str | None]]:
        return [a for a in self.answers if a[0] != 200]


def post(
    target: ServerTarget, body: bytes, content_type: str = "application/json", model: str = "demo"
):
    host, port = target.base_url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("POST", f"/v1/models/{model}/predict", body, {"Content-Type": content_type})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def test_malformed_requests_get_a_clear_4xx_and_the_server_goes_on(registry):
    def record(**change):
        return {**ROW, **change}

    extra = {**ROW, "colour": "red"}
    missing = {k: v for k, v in ROW.items() if k != "balance"}
    cases = [
        ("not JSON", b'{"age": 42,', "application/json", 400, "not valid JSON"),
        ("wrong content type", json.dumps(ROW).encode(), "text/plain", 415, "application/json"),
        (
            "missing field",
            json.dumps(missing).encode(),
            "application/json",
            422,
            "missing field 'balance'",
        ),
        (
            "extra field",
            json.dumps(extra).encode(),
            "application/json",
            422,
            "unknown field 'colour'",
        ),
        (
            "wrong type",
            json.dumps(record(age="old")).encode(),
            "application/json",
            422,
            "'age' must be an integer",
        ),
        (
            "null",
            json.dumps(record(region=None)).encode(),
            "application/json",
            422,
            "'region' may not be null",
        ),
        ("NaN", json.dumps(record(income=float("nan"))).encode(), "application/json", 422, "NaN"),
        ("infinity", b'{"income": Infinity}', "application/json", 422, "Infinity"),
        (
            "overflow to infinity",
            json.dumps(ROW).replace("62939.47", "1e999").encode(),
            "application/json",
            422,
            "'income' is infinite",
        ),
        ("empty batch", b"[]", "application/json", 422, "empty batch"),
        ("not a record", b'"hello"', "application/json", 422, "record (object) or a batch"),
        ("batch of non-records", b"[1, 2]", "application/json", 422, "record 0 is a int"),
        (
            "batch over the limit",
            json.dumps([ROW] * 101).encode(),
            "application/json",
            413,
            "over the limit of 100",
        ),
        (
            "oversized body",
            b'{"pad": "' + b"x" * 300_000 + b'"}',
            "application/json",
            413,
            "over the limit",
        ),
    ]
    with server(
        registry, MAESTRO_SERVING_MAX_ROWS="100", MAESTRO_SERVING_MAX_BODY_BYTES="200000"
    ) as (_, target):
        for name, body, content_type, status, message in cases:
            got_status, answer = post(target, body, content_type)
            assert (got_status, message in answer["error"]) == (status, True), (name, answer)
            assert post(target, json.dumps(ROW).encode())[0] == 200, f"after {name}"
        status, answer = post(target, json.dumps(ROW).encode(), model="nope")
        assert status == 404 and "unknown model 'nope'" in answer["error"]
        status, answer = post(target, json.dumps([ROW] * 100).encode())
        assert status == 200 and len(answer["predictions"]) == 100
        assert target.request("GET", "/health")[0] == 200
        metrics = target.metrics()
        assert (
            metrics[("maestro_request_errors_total", (("model", "demo"), ("reason", "422")))] >= 9
        )


def test_a_configured_token_is_required_except_for_health(registry):
    with server(registry, MAESTRO_SERVING_TOKEN="s3cret-for-test") as (_, target):
        assert target.request("POST", "/v1/models/demo/predict", ROW)[0] == 200
        target.token = "wrong"
        assert target.request("POST", "/v1/models/demo/predict", ROW)[0] == 401
        assert target.request("GET", "/v1/models")[0] == 401
        target.token = None
        assert target.request("POST", "/v1/models/demo/predict", ROW)[0] == 401
        assert target.request("GET", "/health")[0] == 200
        assert target.request("GET", "/ready")[0] == 200


def test_blue_green_and_canary_rollouts_under_load_fail_no_request(registry):
    with server(registry) as (_, target):
        rows = example_rows_of(registry, "2")
        with LoadLoop(target) as load:
            time.sleep(0.5)
            deploy(target, "demo", "2", "blue-green", rows, latency_budget_ms=500)
            time.sleep(0.5)
        assert len(load.answers) > 50 and load.failures() == []
        versions = [v for _, v in load.answers]
        assert versions[0] == "1" and versions[-1] == "2"
        switch = versions.index("2")
        assert set(versions[switch:]) == {"2"}, "after the switch every request goes to green"
        assert target.serving_version("demo") == "2"
        served = json.loads(target.request("GET", "/v1/models")[1])["models"]["demo"]["routes"]
        assert {(r["version"], r["share"]) for r in served} == {("2", 1.0), ("1", 0.0)}

        with LoadLoop(target) as load:
            deploy(
                target,
                "demo",
                "1",
                "canary",
                rows,
                latency_budget_ms=500,
                observe=lambda: time.sleep(1.5),
            )
        assert load.failures() == []
        shares = Counter(v for _, v in load.answers)
        assert shares["1"] > 0 and shares["2"] > 0, shares
        assert target.serving_version("demo") == "1"


def test_a_broken_canary_is_rolled_back_and_the_stable_share_never_fails(registry):
    with server(registry) as (_, target):
        rows = example_rows_of(registry, "3")
        with LoadLoop(target) as load:
            with pytest.raises(DeployError, match="canary of demo version 3 at 10%: error rate"):
                deploy(
                    target,
                    "demo",
                    "3",
                    "canary",
                    rows,
                    latency_budget_ms=500,
                    observe=lambda: time.sleep(1.5),
                )
            time.sleep(0.5)
        assert target.serving_version("demo") == "1"
        served = json.loads(target.request("GET", "/v1/models")[1])["models"]["demo"]["routes"]
        assert [(r["version"], r["share"]) for r in served] == [("1", 1.0)]
        stable = [a for a in load.answers if a[1] == "1"]
        assert stable and all(status == 200 for status, _ in stable)
        assert load.failures() and set(load.failures()) == {(500, "3")}


def test_a_restarted_server_keeps_its_plan_and_every_acknowledged_prediction(registry, tmp_path):
    env = {
        "MAESTRO_PREDICTION_LOG": str(tmp_path / "log"),
        "MAESTRO_SERVING_PLAN": str(tmp_path / "plan.json"),
    }
    acknowledged = 0
    with server(registry, **env) as (process, target):
        target.apply("demo", _plan(("1", 70), ("2", 30)))
        digest = json.loads(target.request("GET", "/v1/models")[1])["plan"]
        for i in range(60):
            body = ROW if i % 3 else [ROW] * 7
            status, answer = target.request("POST", "/v1/models/demo/predict", body)
            assert status == 200
            acknowledged += len(json.loads(answer)["predictions"])
        # as Ctrl-C or a service manager would: the signal reaches the log's writer process
        # too, which must go on until the server has handed it everything
        os.killpg(process.pid, signal.SIGTERM)
        # uvicorn shuts down gracefully (the log is flushed), then re-raises the signal
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    logged = read_log(str(tmp_path / "log"), "demo")
    assert len(logged) == acknowledged
    assert set(logged["version"]) == {"1", "2"} and set(logged["role"]) == {"primary"}
    assert logged["feature.region"].eq("south").all() and logged["prediction"].between(0, 1).all()
    with server(registry, **env) as (process, target):
        state = json.loads(target.request("GET", "/v1/models")[1])
        assert state["plan"] == digest
        assert {(r["version"], r["share"]) for r in state["models"]["demo"]["routes"]} == {
            ("1", 0.7),
            ("2", 0.3),
        }
        for _ in range(10):
            assert target.request("POST", "/v1/models/demo/predict", ROW)[0] == 200
        time.sleep(2.5)  # over two flush intervals: handed to the writer
        process.kill()  # no shutdown at all: the writer still writes what it was handed
        process.wait(timeout=10)
        _wait_until_gone(process.pid)
    assert len(read_log(str(tmp_path / "log"), "demo")) == acknowledged + 10


def _wait_until_gone(group: int, timeout: float = 30) -> None:
    """Until no process of the group is left (the prediction log's writer is in it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    raise TimeoutError(f"process group {group} still runs after {timeout:.0f}s")


def _plan(*routes: tuple[str, float]) -> ModelPlan:
    return ModelPlan(tuple(Route(v, w) for v, w in routes))


def example_rows_of(home: Path, version: str) -> list[dict]:
    tracking.client(Settings(home=home))
    return example_rows("demo", version)


def test_the_deploy_dag_rolls_out_locally_and_batch_scoring_names_the_version(
    settings, monkeypatch
):
    """deploy_demo (blue-green, local target: it starts the server itself) and batch_score_demo,
    each with dag.test()."""
    from airflow.dag_processing.dagbag import DagBag

    from maestro.config import get_settings

    monkeypatch.setenv("MAESTRO_SERVING_PORT", str(free_port()))
    get_settings.cache_clear()
    settings = get_settings()
    register_versions(settings)
    bag = DagBag(dag_folder=str(DAGS / "deploy.py"))
    pid_file = settings.home / "serving" / "server.pid"
    try:
        run = bag.get_dag("deploy_demo").test(
            run_conf={"version": "2", "strategy": "blue-green", "target": "local"}
        )
        assert run.state == "success"
        states = {ti.task_id: ti.state for ti in run.get_task_instances()}
        assert states["deploy_local"] == "success" and states["deploy_kubernetes"] == "skipped"
        target = ServerTarget(f"http://127.0.0.1:{settings.serving_port}", settings.plan_path)
        assert target.serving_version("demo") == "2"
        status, answer = target.request("POST", "/v1/models/demo/predict", ROW)
        assert status == 200 and json.loads(answer)["version"] == "2"
    finally:
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGTERM)

    run = bag.get_dag("batch_score_demo").test(run_conf={"day": "2025-06-01"})
    assert run.state == "success"
    scores = pd.read_parquet(
        settings.home / "batch_scores" / "demo" / "date=2025-06-01" / "predictions.parquet"
    )
    assert len(scores) > 10 and set(scores["model_version"]) == {"1"}  # the champion
    assert scores["prediction"].between(0, 1).all()
    assert scores["event_timestamp"].dt.strftime("%Y-%m-%d").eq("2025-06-01").all()


def test_a_shadow_version_scores_every_request_but_never_answers(registry, tmp_path):
    env = {
        "MAESTRO_PREDICTION_LOG": str(tmp_path / "log"),
        "MAESTRO_SERVING_PLAN": str(tmp_path / "plan.json"),
    }
    with server(registry, **env) as (process, target):
        target.apply("demo", ModelPlan((Route("1", 100),), shadow="2"))
        answers = [
            json.loads(target.request("POST", "/v1/models/demo/predict", ROW)[1]) for _ in range(20)
        ]
        assert {a["version"] for a in answers} == {"1"}
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    logged = read_log(str(tmp_path / "log"), "demo")
    by_role = {role: rows for role, rows in logged.groupby("role")}
    assert set(by_role["primary"]["version"]) == {"1"} and set(by_role["shadow"]["version"]) == {
        "2"
    }
    assert set(by_role["shadow"]["request_id"]) == {a["request_id"] for a in answers}
    # the two versions really differ: the log can compare them request by request
    assert not np.allclose(
        by_role["primary"]["prediction"].to_numpy(), by_role["shadow"]["prediction"].to_numpy()
    )


def test_a_request_with_only_the_entity_key_is_scored_on_features_from_the_online_store(
    registry,
):
    """`{"customer_id": 17}`: the server reads the spec's feature service from Feast's online
    store (Redis), scores it as the full record, and logs the values it used; an unknown key
    is a 404 naming it, features older than the view's TTL a 409 (refused, not served)."""
    from maestro.data.features import apply_and_materialize, feature_store
    from maestro.data.synthetic import generate
    from maestro.spec import get_spec
    from tests.support import redis_databases

    with redis_databases(1) as (online,):
        settings = Settings(home=registry, feast_online_store=online)
        spec = get_spec("demo", settings)
        frame = generate(300)
        start, end = frame["event_timestamp"].min(), frame["event_timestamp"].max()
        apply_and_materialize(frame, spec, settings, start, end)
        # one customer whose features were last written eleven years ago (TTL: 3650 days)
        stale = frame.head(1).assign(
            customer_id=10**6, event_timestamp=pd.Timestamp("2015-01-01", tz="UTC")
        )
        feature_store(settings).write_to_online_store(spec.feature_view, stale)
        log = registry / "online-log"
        with server(
            registry, MAESTRO_FEAST_ONLINE_STORE=online, MAESTRO_PREDICTION_LOG=str(log)
        ) as (process, target):
            full = frame[spec.feature_names].head(3).to_dict("records")
            ids = [int(i) for i in frame["customer_id"].head(3)]
            status, by_record = post(target, json.dumps(full).encode())
            assert status == 200
            status, by_key = post(target, json.dumps({"customer_id": ids[0]}).encode())
            assert status == 200, by_key
            assert by_key["predictions"] == by_record["predictions"][:1]
            batch = json.dumps([{"customer_id": i} for i in ids]).encode()
            status, by_keys = post(target, batch)
            assert status == 200 and by_keys["predictions"] == by_record["predictions"]

            status, unknown = post(target, json.dumps({"customer_id": 424242}).encode())
            assert status == 404 and "unknown customer_id 424242" in unknown["error"]
            status, old = post(target, json.dumps({"customer_id": 10**6}).encode())
            assert status == 409 and "older than demo_features's TTL (3650 days)" in old["error"]
            status, wrong = post(target, json.dumps({"customer_id": "17"}).encode())
            assert status == 422 and "'customer_id' must be int" in wrong["error"]
            process.send_signal(signal.SIGTERM)  # flushes the prediction log
            process.wait(timeout=60)
    logged = read_log(str(log), "demo")
    used = logged[logged["request_id"] == by_key["request_id"]]
    assert used["feature.age"].tolist() == [full[0]["age"]]
    assert used["feature.region"].tolist() == [full[0]["region"]]


def v2_inputs(rows: list[dict], binary: bool):
    """One tritonclient input per feature, typed as the metadata says."""
    import tritonclient.http as triton

    inputs = []
    for name, value in rows[0].items():
        if isinstance(value, str):
            datatype, array = "BYTES", np.array([r[name] for r in rows], dtype=object)
        elif isinstance(value, int):
            datatype, array = "INT64", np.array([r[name] for r in rows], dtype=np.int64)
        else:
            datatype, array = "FP64", np.array([r[name] for r in rows], dtype=np.float64)
        tensor = triton.InferInput(name, [len(rows)], datatype)
        inputs.append(tensor.set_data_from_numpy(array, binary_data=binary))
    return inputs


def test_the_open_inference_protocol_answers_as_the_json_routes_do(registry, tmp_path):
    """Driven by NVIDIA's tritonclient (a V2 client nobody here wrote): metadata from the
    signature, JSON and binary tensors scored as the JSON route scores records, with the same
    plan (a pinned version, a shadow), token, refusals, metrics and prediction log."""
    import tritonclient.http as triton
    from tritonclient.utils import InferenceServerException

    from maestro.data.synthetic import generate

    frame = generate(40, seed=7)[list(ROW)]
    rows = json.loads(frame.to_json(orient="records"))
    token = "s3cret-for-test"
    env = {
        "MAESTRO_PREDICTION_LOG": str(tmp_path / "log"),
        "MAESTRO_SERVING_PLAN": str(tmp_path / "plan.json"),
        "MAESTRO_SERVING_TOKEN": token,
    }
    with server(registry, **env) as (process, target):
        target.apply("demo", ModelPlan((Route("1", 100),), shadow="2"))
        client = triton.InferenceServerClient(target.base_url.removeprefix("http://"))
        auth = {"Authorization": f"Bearer {token}"}  # copied per call: the client adds to it
        assert client.is_server_live() and client.is_server_ready()
        assert client.is_model_ready("demo", headers={**auth})
        assert not client.is_model_ready("nope", headers={**auth})
        assert not client.is_model_ready("demo")  # which models exist: for the token's holders
        metadata = client.get_model_metadata("demo", headers={**auth})
        assert metadata["versions"] == ["1", "2"]
        types = {i["name"]: i["datatype"] for i in metadata["inputs"]}
        assert types == {
            **dict.fromkeys(["age", "tenure_months", "num_products", "support_calls"], "INT64"),
            **dict.fromkeys(["income", "balance"], "FP64"),
            **dict.fromkeys(["region", "plan", "group"], "BYTES"),
        }
        assert metadata["outputs"] == [{"name": "predictions", "datatype": "FP64", "shape": [-1]}]

        status, body = target.request("POST", "/v1/models/demo/predict", rows)
        expected = json.loads(body)["predictions"]
        answers = []
        for binary in (False, True):
            result = client.infer(
                "demo", v2_inputs(rows, binary), headers={**auth}, request_id="r7"
            )
            assert result.as_numpy("predictions").tolist() == expected
            answer = result.get_response()
            assert answer["model_version"] == "1" and answer["id"] == "r7"
            answers.append(answer["parameters"]["request_id"])
        pinned = client.infer(
            "demo", v2_inputs(rows[:3], True), model_version="2", headers={**auth}
        )
        status, body = target.request("POST", "/v1/models/demo/versions/2/predict", rows[:3])
        assert pinned.as_numpy("predictions").tolist() == json.loads(body)["predictions"]

        # refusals: the JSON routes' statuses and messages, in the protocol's error shape
        wrong_type = v2_inputs(rows, False)
        wrong_type[0] = triton.InferInput("age", [len(rows)], "FP64").set_data_from_numpy(
            frame["age"].to_numpy(np.float64), binary_data=False
        )
        refusals = [
            (v2_inputs(rows, True)[1:], auth, "demo", "422", "missing input 'age'"),
            (wrong_type, auth, "demo", "422", "input 'age': datatype FP64 does not fit"),
            (v2_inputs(rows, True), auth, "nope", "404", "unknown model 'nope'"),
            (v2_inputs(rows, True), {}, "demo", "401", "missing or wrong bearer token"),
        ]
        for inputs, headers, model, code, message in refusals:
            with pytest.raises(InferenceServerException) as refused:
                client.infer(model, inputs, headers={**headers})
            assert (refused.value.status(), message in refused.value.message()) == (code, True), (
                refused.value.message()
            )
        v2 = {"inputs": [{"name": "age", "shape": [1], "datatype": "INT64", "data": [None]}]}
        status, body = target.request("POST", "/v2/models/demo/infer", v2)
        assert status == 422 and json.loads(body) == {"error": "missing input 'income'"}
        null = {
            "inputs": [
                {"name": k, "shape": [1], "datatype": types[k], "data": [None if k == "age" else v]}
                for k, v in rows[0].items()
            ]
        }
        status, body = target.request("POST", "/v2/models/demo/infer", null)
        assert status == 422 and json.loads(body) == {"error": "input 'age' row 0 may not be null"}
        metrics = target.metrics()

        # on LightGBM (version 2), a batch this large has the trees compiled in the background;
        # once they are, both protocols score by them, as the booster did
        target.apply("demo", ModelPlan((Route("2", 100),)))
        many = json.loads(generate(300, seed=8)[list(ROW)].to_json(orient="records"))
        status, body = target.request("POST", "/v1/models/demo/predict", many)
        by_booster = json.loads(body)["predictions"]
        deadline = time.monotonic() + 120
        while (state := _compiled(target, "2")) != "ready":
            assert state == "compiling" and time.monotonic() < deadline, state
            time.sleep(0.2)
        status, body = target.request("POST", "/v1/models/demo/predict", many)
        by_forest = client.infer("demo", v2_inputs(many, True), headers={**auth})
        for compiled in (json.loads(body)["predictions"], by_forest.as_numpy("predictions")):
            np.testing.assert_allclose(compiled, by_booster, rtol=1e-9, atol=1e-12)
        client.close()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    ok = ("maestro_requests_total", (("code", "200"), ("model", "demo"), ("version", "1")))
    assert metrics[ok] == 3  # two V2 requests and the JSON one routed by the plan
    assert metrics[("maestro_request_errors_total", (("model", "demo"), ("reason", "422")))] == 4

    # the prediction log holds each V2 request's rows, as sent, for the primary and the shadow
    logged = read_log(str(tmp_path / "log"), "demo")
    for request_id in answers:
        rows_logged = logged[logged["request_id"] == request_id]
        assert sorted(rows_logged["role"].unique()) == ["primary", "shadow"]
        primary = rows_logged[rows_logged["role"] == "primary"]
        features = primary[[f"feature.{k}" for k in ROW]].set_axis(list(ROW), axis=1)
        pd.testing.assert_frame_equal(
            features.reset_index(drop=True), frame, check_dtype=False, check_like=True
        )
        assert primary["prediction"].tolist() == expected


def _compiled(target: ServerTarget, version: str) -> str | None:
    """The state of a served version's compiled forest, as the server reports it."""
    status, body = target.request("GET", "/v1/models")
    routes = json.loads(body)["models"]["demo"]["routes"]
    return next(route["compiled"] for route in routes if route["version"] == version)


def test_two_workers_share_the_port_and_log_every_prediction_once(registry, tmp_path):
    """`maestro serve --workers 2`: both processes answer on one port with the same plan; the
    metrics add up across them; a worker killed (SIGKILL) right after answering loses nothing
    and is replaced; SIGTERM writes everything; no prediction is logged twice."""
    import psutil

    env = {
        "MAESTRO_PREDICTION_LOG": str(tmp_path / "log"),
        "MAESTRO_SERVING_PLAN": str(tmp_path / "plan.json"),
        "MAESTRO_SERVING_WORKERS": "2",
    }

    def workers(pid: int) -> list[psutil.Process]:
        """The server's worker processes (each has its prediction log writer as a child)."""
        return [p for p in psutil.Process(pid).children() if p.children()]

    def send(target: ServerTarget, count: int) -> list[str]:
        """`count` requests, each on a new connection (so both workers take some)."""
        host, port = target.base_url.removeprefix("http://").split(":")
        ids = []
        for i in range(count):
            conn = http.client.HTTPConnection(host, int(port), timeout=10)
            body = json.dumps([ROW] * (1 + i % 3))
            conn.request(
                "POST", "/v1/models/demo/predict", body, {"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            answer = json.loads(response.read())
            conn.close()
            assert response.status == 200, answer
            ids.append(answer["request_id"])
        return ids

    with server(registry, **env) as (process, target):
        target.apply("demo", _plan(("1", 50), ("2", 50)))
        first = workers(process.pid)
        assert len(first) == 2
        answered = send(target, 60)

        def answered_ok() -> float:
            return sum(
                v
                for (name, labels), v in target.metrics().items()
                if name == "maestro_requests_total" and ("code", "200") in labels
            )

        # both workers' counters, added up: the other worker's within half a second
        assert wait_for(lambda: answered_ok() == 60, timeout=5, interval=0.1, what="counts")
        first[0].kill()  # SIGKILL right after its answers: its writer has every one of them
        deadline = time.monotonic() + 60
        while len(workers(process.pid)) < 2 or first[0] in workers(process.pid):
            assert time.monotonic() < deadline, "the killed worker was not replaced"
            time.sleep(0.5)
        answered += send(target, 60)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0
        _wait_until_gone(process.pid)
    logged = read_log(str(tmp_path / "log"), "demo")
    per_request = logged.groupby("request_id").size()
    assert set(per_request.index) == set(answered)  # none lost
    expected = {request_id: 1 + i % 3 for i, request_id in enumerate(answered[:60])}
    expected |= {request_id: 1 + i % 3 for i, request_id in enumerate(answered[60:])}
    assert per_request.to_dict() == expected  # none twice
    assert set(logged["version"]) == {"1", "2"}


def test_under_sustained_batches_the_log_is_bounded_and_a_stop_drains_then_spills(
    registry, tmp_path
):
    """1,000-row batches from four clients for eight seconds against a log bounded to 50,000
    waiting rows, then SIGTERM: requests past the bound are refused (503, Retry-After, counted),
    the server exits within its drain time, and every answered request is either written or
    spilled, exactly once; the next start writes the spill."""
    from maestro.serving.log_writer import EntryFile

    drain = 1.0
    env = {
        "MAESTRO_PREDICTION_LOG": str(tmp_path / "log"),
        "MAESTRO_SERVING_PLAN": str(tmp_path / "plan.json"),
        "MAESTRO_PREDICTION_LOG_MAX_ROWS": "50000",
        "MAESTRO_PREDICTION_LOG_DRAIN_SECONDS": str(drain),
    }
    body = json.dumps([ROW] * 1000).encode()
    answered: list[str] = []
    refused: list[str | None] = []
    stop = threading.Event()

    def client(target: ServerTarget) -> None:
        host, port = target.base_url.removeprefix("http://").split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        while not stop.is_set():
            conn.request(
                "POST", "/v1/models/demo/predict", body, {"Content-Type": "application/json"}
            )
            response = conn.getresponse()
            answer = json.loads(response.read())
            if response.status == 200:
                answered.append(answer["request_id"])
            else:
                assert response.status == 503, answer
                refused.append(response.getheader("Retry-After"))

    with server(registry, **env) as (process, target):
        clients = [threading.Thread(target=client, args=(target,)) for _ in range(4)]
        for thread in clients:
            thread.start()
        time.sleep(8)
        stop.set()
        for thread in clients:
            thread.join()
        counted = target.metrics()[("maestro_prediction_log_refused_requests_total", ())]
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        process.wait(timeout=60)
        stopped_in = time.monotonic() - started
    said = (registry / f"serve-{target.base_url.rsplit(':', 1)[1]}.log").read_text()
    assert stopped_in < 5 + drain + 3, (stopped_in, said[-2000:])
    assert "prediction log: stopped after" in said, said[-2000:]
    assert len(answered) > 50 and counted == len(refused)
    assert set(refused) <= {"1"}

    def written() -> Counter:
        return Counter(read_log(str(tmp_path / "log"), "demo")["request_id"])

    spill = tmp_path / "log" / "_spill"
    spilled = Counter(
        e.request_id
        for path in spill.iterdir()
        for e in EntryFile.read(path)
        for _ in range(e.rows)
    )
    both = written() + spilled
    assert set(both) == set(answered) and set(both.values()) == {1000}, "each exactly once"
    with server(registry, **env):
        wait_for(lambda: set(written()) == set(answered), timeout=60, interval=0.5, what="spill")
    assert set(written().values()) == {1000} and not list(spill.iterdir())

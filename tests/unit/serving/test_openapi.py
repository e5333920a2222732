"""The model server under a fuzzer: schemathesis generates requests, valid and not, from the
server's own OpenAPI document (every route, the served model's records and tensors as its
signature declares them) and sends them over real HTTP to `maestro serve`, with the token and
without. No answer may be a 5xx, and every answer must be one the document describes: its
status, content type and body."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from maestro.waiting import wait_for
from maestro.web import free_port
from tests.support import fit_lightgbm, register_version

pytestmark = pytest.mark.slow
TOKEN = "fuzz-token"  # a test server's, on loopback  # pragma: allowlist secret
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same requests every run: a failure is reproducible
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`maestro serve demo` on loopback (one worker, prediction log on), the demo champion in
    a registry of its own: its base URL."""
    from maestro.config import get_settings
    from maestro.data.synthetic import generate
    from maestro.spec import get_spec

    home = tmp_path_factory.mktemp("fuzz") / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MAESTRO_HOME", str(home))
        for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):
            patch.delenv(name, raising=False)
        get_settings.cache_clear()
        settings_ = get_settings()
        spec = get_spec("demo", settings_)
        frame = generate(2000)
        pipeline = fit_lightgbm(spec, frame, {"n_estimators": 20, "num_leaves": 7})
        register_version(settings_, spec, pipeline, frame)
        port = free_port()
        env = {
            **os.environ,
            "MAESTRO_SERVING_TOKEN": TOKEN,
            "MAESTRO_SERVING_MAX_ROWS": "20",
            "MAESTRO_PREDICTION_LOG": str(home / "prediction_log"),
        }
        command = [str(Path(sys.executable).with_name("maestro")), "serve", "demo"]
        command += ["--port", str(port), "--workers", "1"]
        log = (home / "serve.log").open("w")
        process = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        base = f"http://127.0.0.1:{port}"

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {(home / 'serve.log').read_text()}")
            try:
                return httpx.get(f"{base}/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, timeout=120, interval=0.25, what="the model server did not start")
        try:
            yield base
        finally:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)
            log.close()
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def api(server):
    return schemathesis.openapi.from_url(f"{server}/openapi.json", headers=AUTH)


def fuzz(api, headers: dict, answered: dict | None = None) -> list[str]:
    """Each operation of the document under valid and invalid requests; what failed, named
    by operation (hypothesis shrinks each failure to its smallest request). `answered`
    counts the answers per (operation, status)."""
    failures = []
    answered = {} if answered is None else answered
    for found in api.get_all_operations():
        operation = found.ok()
        try:
            fuzz_operation(operation, headers, answered)()
        except Exception as error:  # noqa: BLE001 - every operation's failure is reported
            failures.append(f"{operation.label}: {error}")
    return failures


def fuzz_operation(operation, headers: dict, answered: dict):
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(
        GenerationMode.NEGATIVE
    )

    @FUZZ
    @given(case=cases)
    def call(case) -> None:
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        key = (operation.label, response.status_code)
        answered[key] = answered.get(key, 0) + 1

    return call


def test_the_document_is_for_holders_of_the_token_and_names_every_route(server, api):
    assert httpx.get(f"{server}/openapi.json").status_code == 401
    paths = set(httpx.get(f"{server}/openapi.json", headers=AUTH).json()["paths"])
    assert {
        "/v1/models/demo/predict",
        "/v1/models/demo/versions/{version}/predict",
        "/v2/models/demo/infer",
        "/v1/models/{model}/feedback",
        "/health",
    } <= paths


def test_with_the_token_no_answer_is_a_5xx_or_outside_the_document(api):
    answered: dict = {}
    failures = fuzz(api, AUTH, answered)
    assert failures == [], "\n\n".join(failures)
    scored = {operation for (operation, status) in answered if status == 200}
    for route in ("/v1/models/demo/predict", "/v2/models/demo/infer"):
        assert f"POST {route}" in scored, (
            answered
        )  # the fuzzer reached the model, not only refusals


def test_without_the_token_no_answer_is_a_5xx_or_outside_the_document(api):
    failures = fuzz(api, {})
    assert failures == [], "\n\n".join(failures)

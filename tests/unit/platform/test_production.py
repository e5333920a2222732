"""Production mode (`MAESTRO_ENV=production`) refuses to start what would run without its
secrets: the model server without a token, `maestro up` without the Airflow and MLflow admin
passwords. Given them, MLflow's server runs with authentication, and Airflow uses the given
password instead of generating one."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from maestro.config import Settings
from maestro.errors import BadInput
from maestro.platform import credentials, services
from maestro.serving.app import create_app
from maestro.web import free_port

# made up for this test, like the test's state folder
AIRFLOW_PW = "a1rfl0w-test-passw0rd"  # pragma: allowlist secret
MLFLOW_PW = "mlfl0w-test-passw0rd"  # pragma: allowlist secret


def production(tmp_path: Path, **secrets: str) -> Settings:
    return Settings(home=tmp_path / "home", env="production", **secrets)


@pytest.mark.parametrize("token", [None, "", "CHANGE_ME", "short"])
def test_the_model_server_will_not_start_without_a_real_token(tmp_path, token):
    with pytest.raises(
        BadInput, match="the model server will not start without MAESTRO_SERVING_TOKEN"
    ):
        create_app(production(tmp_path, serving_token=token), ["demo"])


def test_in_development_the_server_starts_open(tmp_path):
    assert create_app(Settings(home=tmp_path / "home", prediction_log="off"), ["demo"])


def test_maestro_up_refuses_without_both_passwords_and_starts_nothing(tmp_path, monkeypatch):
    from maestro.platform.cli import main

    monkeypatch.setenv("MAESTRO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MAESTRO_ENV", "production")
    monkeypatch.delenv("MAESTRO_AIRFLOW_PASSWORD", raising=False)
    monkeypatch.setenv("MAESTRO_MLFLOW_ADMIN_PASSWORD", "CHANGE_ME")
    from maestro.config import get_settings

    get_settings.cache_clear()
    try:
        assert main(["up"]) == 2
    finally:
        get_settings.cache_clear()
    assert not (tmp_path / "home" / "logs").exists(), "a component was started"


def test_given_passwords_airflow_keeps_them_and_mlflow_asks_for_them(tmp_path, monkeypatch):
    settings = production(tmp_path, airflow_password=AIRFLOW_PW, mlflow_admin_password=MLFLOW_PW)
    env = credentials.production_environment(settings)
    credentials.airflow_passwords(settings)
    # Airflow's simple auth manager finds the admin's password and generates none
    written = json.loads(credentials.passwords_file(settings.home).read_text())
    assert written == {"admin": AIRFLOW_PW}
    # the MLflow server, as `maestro up` starts it, answers only to the admin
    port = free_port()
    command = services.platform_commands(settings, services.Ports(mlflow=port))["mlflow"]
    assert command[-2:] == ["--app-name", "basic-auth"]
    log = (tmp_path / "mlflow.log").open("w")
    server = subprocess.Popen(
        command, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        url = f"http://127.0.0.1:{port}/api/2.0/mlflow/experiments/search?max_results=1"
        deadline = time.monotonic() + 60
        while True:
            try:
                anonymous = httpx.get(url, timeout=5)
                break
            except httpx.TransportError:
                assert server.poll() is None, (tmp_path / "mlflow.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "the MLflow server did not answer in 60 s"
                time.sleep(0.5)
        assert anonymous.status_code == 401
        assert httpx.get(url, auth=("admin", "wrong"), timeout=5).status_code == 401
        assert httpx.get(url, auth=("admin", MLFLOW_PW), timeout=5).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()

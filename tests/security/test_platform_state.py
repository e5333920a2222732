"""`maestro up` for real, as an operator finds it: its state folder and what is in it are its
owner's alone, no log holds a password, and a component that dies (MLflow, SIGKILLed) is
restarted while the rest runs on."""

from __future__ import annotations

import json
import os
import re
import signal
import stat

import pytest

from maestro.platform.credentials import passwords_file
from maestro.web import answers
from tests.integration.test_platform import running_platform, wait_for

pytestmark = pytest.mark.slow


def mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_platforms_state_is_private_and_a_dead_component_comes_back(tmp_path):
    with running_platform(tmp_path, {}) as (process, home, ports, log, _):
        airflow = f"http://127.0.0.1:{ports.airflow}/api/v2/monitor/health"
        mlflow = f"http://127.0.0.1:{ports.mlflow}/health"
        wait_for(lambda: answers(airflow) and answers(mlflow), 180, "Airflow and MLflow", process)

        assert mode(home) == 0o700
        private = [passwords_file(home), home / "airflow" / "airflow.db", home / "mlflow.db"]
        private += list((home / "logs").glob("*.log"))
        assert {p.name: mode(p) for p in private} == {p.name: 0o600 for p in private}
        assert mode(home / "logs") == 0o700
        passwords = json.loads(passwords_file(home).read_text())
        assert set(passwords) == {"admin", "ci", "viewer"}
        for path in (home / "logs").glob("*.log"):
            text = path.read_text(errors="replace")
            leaked = [user for user, secret in passwords.items() if secret in text]
            assert not leaked, f"{path.name} holds the password of {leaked}"

        said = log.read_text()
        pid = int(re.search(r"started mlflow\s+pid (\d+)", said)[1])
        os.killpg(pid, signal.SIGKILL)
        wait_for(lambda: "restarted mlflow pid" in log.read_text(), 60, "MLflow restarted", process)
        assert "mlflow exited (code -9); restarting in 1s" in log.read_text()
        wait_for(lambda: answers(mlflow), 120, "MLflow to answer again", process)
        assert answers(airflow) and process.poll() is None

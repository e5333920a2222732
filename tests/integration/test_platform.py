"""`maestro up` for real: Airflow's api-server, scheduler, dag-processor and triggerer with the
LocalExecutor, and the MLflow server, all on loopback. A run triggered through Airflow's REST
API (as CI does) trains and registers a model, an approver approves it on the Required Actions
page of the Airflow UI in headless Chromium, and the MLflow server then shows it as champion."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from maestro.deploy.strategies import ServerTarget
from maestro.platform.airflow_api import AirflowClient
from maestro.platform.services import Ports, admin_password, passwords_file, up_command
from maestro.web import free_port
from tests.conftest import PROJECT, write_specs

pytestmark = pytest.mark.slow


def wait_for(predicate, timeout: float, what: str, platform: subprocess.Popen):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert platform.poll() is None, f"maestro up exited while waiting for {what}"
        value = predicate()
        if value:
            return value
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


CHROMIUM = Path("/usr/bin/chromium")
# no first-run, sync or background traffic: the machine has no network beyond loopback
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser():
    """Headless Debian Chromium driven by Playwright (no browser is downloaded)."""
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is absent: `apt-get install chromium` (./dev test does, as root)"
        if os.environ.get("MAESTRO_REQUIRE_BROWSER"):
            pytest.fail(f"the browser test is required (MAESTRO_REQUIRE_BROWSER): {message}")
        pytest.skip(message + "; set MAESTRO_REQUIRE_BROWSER to fail instead")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def approve_in_the_ui(browser, base_url: str, password: str, run_id: str) -> str:
    """Sign in as admin, open the run's Required Actions page, press Approve; return the
    request's text as the approver saw it."""
    page = browser.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{base_url}/")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")
    page.goto(f"{base_url}/required_actions")
    page.get_by_text("Promote demo version 1 to champion?").first.wait_for()
    page.goto(f"{base_url}/dags/train_demo/runs/{run_id}/tasks/request_approval/required_actions")
    approve = page.get_by_role("button", name="Approve")
    approve.wait_for()
    request = page.inner_text("body")
    approve.click()
    page.get_by_text("response successful").wait_for()
    page.close()
    return request


@contextlib.contextmanager
def running_platform(tmp_path: Path, overrides: dict[str, dict], settings=None):
    """`maestro up` on a fresh state folder, specs changed by `overrides`, free ports and the
    environment `settings(ports)` adds; stopped with SIGTERM afterwards, with the model server
    a deployment started."""
    specs = write_specs(tmp_path / "specs", overrides)
    home = tmp_path / "home"
    ports = Ports(*(free_port() for _ in range(5)))
    env = {
        **os.environ,
        "MAESTRO_HOME": str(home),
        "MAESTRO_SPECS_DIR": str(specs),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "MAESTRO_SERVING_PORT": str(free_port()),
        # besides admin: a CI user (may trigger runs) and a viewer (may not)
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,ci:user,viewer:viewer",
    }
    for key in (
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_REGISTRY_URI",
        "AIRFLOW_HOME",
        "MAESTRO_PUSHGATEWAY_URL",  # the platform's figures go to its own Pushgateway
    ):
        env.pop(key, None)  # the session's; this platform has its own state folder
    env.update(settings(ports) if settings else {})
    log = (tmp_path / "up.log").open("w")
    process = subprocess.Popen(up_command(ports), env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield process, home, ports, tmp_path / "up.log", env
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
        log.close()
        server = home / "serving" / "server.pid"  # the model server a deployment started
        if server.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(server.read_text()), signal.SIGTERM)


@pytest.fixture
def platform(tmp_path: Path):
    demo = {"source": {"rows": 8000}, "trials": 4, "schedule": None}
    with running_platform(
        tmp_path, {"demo": {**demo, "governance": {"latency_budget_ms": 500}}}
    ) as up:
        yield up


def run_as_ci(env: dict, base_url: str, username: str, password: str, command: str):
    """A shell command with the CI secrets the workflow gives it."""
    secrets = {
        "MAESTRO_AIRFLOW_API_URL": base_url,
        "MAESTRO_AIRFLOW_USERNAME": username,
        "MAESTRO_AIRFLOW_PASSWORD": password,
    }
    return subprocess.run(
        ["bash", "-c", command],
        cwd=PROJECT,
        env={**env, **secrets},
        capture_output=True,
        text=True,
        timeout=900,
    )


def workflow_command() -> str:
    """Exactly what the example GitHub Actions workflow runs to retrain."""
    workflow = yaml.safe_load((PROJECT / ".github" / "workflows" / "retrain-demo.yml").read_text())
    assert workflow[True]["push"]["paths"] == ["include/specs/demo.yaml"]  # YAML 1.1: on = True
    steps = workflow["jobs"]["retrain"]["steps"]
    return next(step["run"] for step in steps if "maestro trigger" in step.get("run", ""))


def test_a_run_triggered_from_ci_is_approved_in_the_ui_and_promoted(platform, browser):
    process, home, ports, log, env = platform
    wait_for(lambda: "Ctrl-C stops everything" in log.read_text(), 180, "both UIs", process)
    base_url = f"http://127.0.0.1:{ports.airflow}"
    airflow = AirflowClient(base_url, "admin", admin_password(home))
    wait_for(
        lambda: {"train_demo", "train_adult_income", "deploy_demo"} <= airflow.dag_ids(),
        120,
        "the dag-processor to parse the DAGs",
        process,
    )
    airflow.unpause("train_demo")
    airflow.unpause("deploy_demo")  # it runs on every event of the asset demo_champion
    passwords = json.loads(passwords_file(home).read_text())

    # CI without the right credentials, or with a viewer's, is refused with a clear message
    maestro = f"{Path(sys.executable).with_name('maestro')} trigger demo"
    wrong = run_as_ci(env, base_url, "ci", "wrong", maestro)
    assert wrong.returncode == 4 and "refused the credentials of 'ci' (HTTP 401)" in wrong.stdout
    viewer = run_as_ci(env, base_url, "viewer", passwords["viewer"], maestro)
    assert viewer.returncode == 4
    assert "'viewer' may not trigger train_demo (HTTP 403)" in viewer.stdout

    # the workflow's own command: the run passes its gates and waits for a human (exit 3,
    # which the workflow takes as a success), saying where to decide
    done = run_as_ci(env, base_url, "ci", passwords["ci"], workflow_command())
    assert done.returncode == 0, done.stdout + done.stderr
    assert "waiting for a decision: approve on" in done.stdout, done.stdout
    run_id = done.stdout.split("triggered      train_demo run ", 1)[1].split()[0]

    def asking() -> bool:
        tasks = {t["task_id"]: t["state"] for t in airflow.task_instances("train_demo", run_id)}
        assert "failed" not in tasks.values(), tasks
        return tasks.get("request_approval") == "deferred"

    wait_for(asking, 600, "the approval request", process)
    request = approve_in_the_ui(browser, base_url, admin_password(home), run_id)
    assert "passed every gate" in request and "selection_rate_ratio" in request
    # the model card link opens the MLflow UI on the evaluation run's card
    assert f"http://localhost:{ports.mlflow}/#/experiments/" in request
    assert airflow.wait("train_demo", run_id, timeout=300)["state"] == "success"
    tasks = airflow.task_instances("train_demo", run_id)
    assert sorted(t["map_index"] for t in tasks if t["task_id"] == "tune") == [0, 1]
    states = {t["task_id"]: t["state"] for t in tasks}
    assert states["promote"] == "success" and states["not_promoted"] == "skipped", states

    mlflow = f"http://127.0.0.1:{ports.mlflow}"
    url = f"{mlflow}/api/2.0/mlflow/registered-models/alias?name=demo&alias=champion"
    with urllib.request.urlopen(url, timeout=10) as response:
        version = json.loads(response.read())["model_version"]
    tags = {t["key"]: t["value"] for t in version["tags"]}
    assert tags["airflow_run_id"] == run_id and tags["trigger"] == "ci"
    assert tags["approval"] == "approved" and tags["approval_by"] == "admin"
    assert tags["approval_via"] == "airflow-ui"

    # by hand, `maestro promote` emits the same asset event as the DAG's promote task
    cli = subprocess.run(
        [str(Path(sys.executable).with_name("maestro")), "promote", "demo", "1", "--by", "admin"],
        check=False,
        env={**env, "MAESTRO_AIRFLOW_API_URL": base_url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert cli.returncode == 0 and "asset event" in cli.stdout, cli.stdout + cli.stderr
    events = airflow.asset_events("demo_champion")
    assert [e["source_task_id"] for e in events] == ["promote", None]
    assert events[0]["extra"]["champion"] == events[1]["extra"]["champion"] == "1"
    assert events[1]["extra"]["via"] == "cli"

    # the events started deploy_demo (one run per event, or one for both when they came
    # together), which put the champion on the local model server
    def deployed() -> bool:
        runs = airflow.runs("deploy_demo")
        assert all(r["state"] != "failed" for r in runs), runs
        return bool(runs) and all(r["state"] == "success" for r in runs)

    wait_for(deployed, 300, "the asset-triggered deployment", process)
    assert {r["run_type"] for r in airflow.runs("deploy_demo")} == {"asset_triggered"}
    serving = ServerTarget(
        f"http://127.0.0.1:{int(env['MAESTRO_SERVING_PORT'])}", home / "serving" / "plan.json"
    )
    assert serving.serving_version("demo") == "1"

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    for port in (ports.airflow, ports.mlflow, ports.evidently):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"

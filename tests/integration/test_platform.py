"""`maestro up` for real, as a team deploys it: Airflow's api-server, scheduler, dag-processor,
triggerer and two Celery workers on a Redis broker; Airflow's metadata, MLflow's backend store, the
Optuna studies and Feast's registry in PostgreSQL; Feast's online store in Redis; tasks, the CLI and
the model server reaching the MLflow server over HTTP, artifacts served by it.

CI triggers a run through Airflow's REST API; a backup is taken while its trials run on both
workers; the worker fitting the final model is lost (and restarted) and the task retried; an approver
approves in the Airflow UI (headless Chromium); the version is promoted, deployed by its asset and
served; the backup restores into fresh databases. The LocalExecutor platform is tested by
test_closed_loop.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from maestro.deploy.target import ServerTarget
from maestro.platform.airflow_api import AirflowClient
from maestro.platform.credentials import admin_password, passwords_file
from maestro.platform.services import Ports, up_command
from maestro.web import free_port
from tests.support import PROJECT, postgres_databases, redis_databases, write_specs

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


def as_ci(env: dict, base_url: str, username: str, password: str, command: str):
    """Start a shell command with the CI secrets the workflow gives it; its output is piped."""
    secrets = {
        "MAESTRO_AIRFLOW_API_URL": base_url,
        "MAESTRO_AIRFLOW_USERNAME": username,
        "MAESTRO_AIRFLOW_PASSWORD": password,
    }
    return subprocess.Popen(
        ["bash", "-c", command],
        cwd=PROJECT,
        env={**env, **secrets},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def workflow_command() -> str:
    """Exactly what the example GitHub Actions workflow runs to retrain."""
    workflow = yaml.safe_load((PROJECT / ".github" / "workflows" / "retrain-demo.yml").read_text())
    assert workflow[True]["push"]["paths"] == ["include/specs/demo.yaml"]  # YAML 1.1: on = True
    steps = workflow["jobs"]["retrain"]["steps"]
    return next(step["run"] for step in steps if "maestro trigger" in step.get("run", ""))


def worker_pids(log: str) -> dict[str, int]:
    """The Celery workers `maestro up` started, by name."""
    return {m[0]: int(m[1]) for m in re.findall(r"started (worker-\d+)\s+pid (\d+)", log)}


def shared_stores(databases: dict[str, str], broker: str, online_store: str):
    """The settings of a platform on two Celery workers with every store shared."""

    def settings(ports: Ports) -> dict[str, str]:
        return {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": databases["airflow"].replace(
                "postgresql://", "postgresql+psycopg2://"
            ),
            "MAESTRO_EXECUTOR": "celery",
            "MAESTRO_CELERY_WORKERS": "2",
            "MAESTRO_WORKER_CONCURRENCY": "1",  # two tune tasks: one per worker
            "MAESTRO_CELERY_BROKER": broker,
            "MAESTRO_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports.mlflow}",
            "MAESTRO_MLFLOW_BACKEND_STORE": databases["mlflow"],
            "MAESTRO_OPTUNA_STORAGE": databases["optuna"],
            "MAESTRO_FEAST_REGISTRY": databases["feast"],
            "MAESTRO_FEAST_ONLINE_STORE": online_store,
            # a lost worker's task fails (and is retried) 20 s after its last heartbeat
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
        }

    return settings


STORES = ("airflow", "mlflow", "optuna", "feast")


@pytest.fixture
def platform(tmp_path: Path):
    """`maestro up --executor celery` on fresh PostgreSQL databases and Redis databases."""
    with (
        postgres_databases(*STORES) as databases,
        redis_databases(2) as (broker, online_store),
    ):
        demo = {"source": {"rows": 8000}, "trials": 4, "workers": 2, "schedule": None}
        overrides = {"demo": {**demo, "governance": {"latency_budget_ms": 500}}}
        settings = shared_stores(databases, broker, online_store)
        with running_platform(tmp_path, overrides, settings) as up:
            yield (*up, databases, online_store)


def maestro(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("maestro")), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_production_platform(platform, browser, tmp_path):
    """CI triggers `train_demo` through the REST API; its trials run on the Celery workers
    while a backup is taken; the worker fitting the final model is SIGKILLed and the task is
    retried on the other; an approver approves in the Airflow UI; the version is promoted and
    deployed, and served from the shared stores; the backup restores into fresh databases."""
    process, home, ports, log, env, databases, online_store = platform
    wait_for(lambda: "Ctrl-C stops everything" in log.read_text(), 180, "the platform", process)
    workers = worker_pids(log.read_text())
    assert set(workers) == {"worker-1", "worker-2"}
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
    trigger = f"{Path(sys.executable).with_name('maestro')} trigger demo"
    wrong, _ = as_ci(env, base_url, "ci", "wrong", trigger).communicate(timeout=120)
    assert "refused the credentials of 'ci' (HTTP 401)" in wrong, wrong
    viewer, _ = as_ci(env, base_url, "viewer", passwords["viewer"], trigger).communicate(
        timeout=120
    )
    assert "'viewer' may not trigger train_demo (HTTP 403)" in viewer, viewer

    # the workflow's own command, which follows the run until it waits for a human
    ci = as_ci(env, base_url, "ci", passwords["ci"], workflow_command())
    run_id = wait_for(lambda: airflow.runs("train_demo"), 120, "the CI run", process)[0][
        "dag_run_id"
    ]

    def running(task_id: str) -> dict | None:
        found = airflow.task_instances("train_demo", run_id)
        return next((t for t in found if t["task_id"] == task_id and t["state"] == "running"), None)

    # a backup while the trials run on the workers
    wait_for(lambda: running("tune"), 600, "the tuning trials", process)
    archive = tmp_path / "backups" / "during-training.tar.gz"
    done = maestro("backup", str(archive), env=env)
    assert done.returncode == 0, done.stdout + done.stderr

    # a worker is lost (SIGKILL, its tasks with it) while it fits the final model
    victim = wait_for(lambda: running("train_final"), 600, "train_final to start", process)
    lost = victim["hostname"].split(".")[0]
    os.killpg(workers[lost], signal.SIGKILL)

    # the run passes its gates and waits for a human: the workflow's command exits 3, which it
    # takes as a success, saying where to decide
    said, _ = ci.communicate(timeout=900)
    assert ci.returncode == 0, said
    assert f"triggered      train_demo run {run_id}" in said
    assert "waiting for a decision: approve on" in said, said

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
    assert f"{lost} exited (code -9); restarting in 1s" in log.read_text()
    assert f"restarted {lost} pid" in log.read_text() and process.poll() is None

    tasks = {
        (t["task_id"], t["map_index"]): t for t in airflow.task_instances("train_demo", run_id)
    }
    # both slots' trials ran on the platform's workers; which worker took which is Celery's
    # choice (it may hand both to one, one after the other), so it is not asserted
    hosts = {tasks["tune", i]["hostname"].split(".")[0] for i in (0, 1)}
    assert hosts <= {"worker-1", "worker-2"}, hosts
    assert {tasks["tune", i]["state"] for i in (0, 1)} == {"success"}
    retried = tasks["train_final", -1]  # after the lost one's heartbeat: the other worker, or
    assert retried["try_number"] == 2  # the lost one, restarted meanwhile
    assert tasks["tune", 0]["queue"] == retried["queue"] == "training"
    assert tasks["ingest", -1]["queue"] == "default"
    assert tasks["promote", -1]["state"] == "success"
    assert tasks["not_promoted", -1]["state"] == "skipped"

    import optuna
    import psycopg2
    import redis
    from mlflow import MlflowClient

    tracking_uri = f"http://127.0.0.1:{ports.mlflow}"
    mlflow = MlflowClient(tracking_uri, tracking_uri)
    (version,) = mlflow.search_model_versions("name = 'demo'")  # none for the lost try
    assert version.tags["airflow_run_id"] == run_id and version.tags["trigger"] == "ci"
    assert version.tags["approval"] == "approved" and version.tags["approval_by"] == "admin"
    assert version.tags["approval_via"] == "airflow-ui"
    assert mlflow.get_model_version_by_alias("demo", "champion").version == version.version

    # every store is the shared one: nothing went to the state folder's embedded defaults
    assert mlflow.get_run(version.run_id).info.artifact_uri.startswith("mlflow-artifacts:/")
    study = optuna.load_study(study_name=version.tags["optuna_study"], storage=databases["optuna"])
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.RUNNING not in states and len(states) == 4
    with psycopg2.connect(databases["feast"]) as conn, conn.cursor() as cur:
        cur.execute("SELECT feature_view_name FROM feature_views")
        assert cur.fetchall() == [("demo_features",)]
    assert redis.Redis.from_url(online_store).dbsize() > 0
    assert not (home / "mlflow.db").exists() and not (home / "feast" / "registry.db").exists()
    assert not (home / "airflow" / "airflow.db").exists()
    assert not (home / "feast" / "online_store.db").exists()
    show = maestro("show", "demo", env={**env, "MAESTRO_HOME": str(home)})
    assert show.returncode == 0, show.stdout + show.stderr
    assert f"tracking store {tracking_uri}" in show.stdout  # the CLI reads through the server

    # by hand, `maestro promote` emits the same asset event as the DAG's promote task
    cli = maestro(
        "promote", "demo", "1", "--by", "admin", env={**env, "MAESTRO_AIRFLOW_API_URL": base_url}
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
    # it scores a request of just a customer id on the features training materialized to Redis
    snapshot = sorted((home / "snapshots").rglob("*.parquet"))[-1]
    customer = int(pd.read_parquet(snapshot)["customer_id"].iloc[-1])
    status, body = serving.request("POST", "/v1/models/demo/predict", {"customer_id": customer})
    answer = json.loads(body)
    assert status == 200 and answer["version"] == "1", answer
    assert 0 <= answer["predictions"][0] <= 1

    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    for port in (ports.airflow, ports.mlflow, ports.evidently):
        with socket.socket() as s:
            assert s.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still answers"

    # the backup taken mid-run restores into fresh databases: each store a consistent
    # snapshot of that moment, which loads
    with postgres_databases(*STORES) as fresh:
        restored = {
            "MAESTRO_HOME": str(tmp_path / "restored"),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": fresh["airflow"],
            "MAESTRO_MLFLOW_BACKEND_STORE": fresh["mlflow"],
            "MAESTRO_OPTUNA_STORAGE": fresh["optuna"],
            "MAESTRO_FEAST_REGISTRY": fresh["feast"],
        }
        done = maestro("restore", str(archive), env={**env, **restored})
        assert done.returncode == 0, done.stdout + done.stderr
        with psycopg2.connect(fresh["airflow"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT state FROM dag_run WHERE run_id = %s", (run_id,))
            assert cur.fetchall() == [("running",)]
        pipeline_run = version.tags["optuna_study"].removeprefix("demo-")
        mid_run = MlflowClient(fresh["mlflow"], fresh["mlflow"]).get_run(pipeline_run)
        assert mid_run.info.status == "RUNNING"
        study = optuna.load_study(study_name=version.tags["optuna_study"], storage=fresh["optuna"])
        complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
        assert len(study.trials) <= 4 and all(t.value is not None for t in complete)
        with psycopg2.connect(fresh["feast"]) as conn, conn.cursor() as cur:
            cur.execute("SELECT feature_view_name FROM feature_views")
            assert cur.fetchall() == [("demo_features",)]

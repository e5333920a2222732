"""`maestro up`: Airflow's components and the MLflow UI on the platform's embedded state."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from maestro.config import Settings
from maestro.platform.airflow_env import airflow_bin, apply_environment
from maestro.platform.processes import reap_group, signal_group
from maestro.web import answers

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
HOST = "127.0.0.1"


def platform_commands(
    settings: Settings, airflow_port: int, mlflow_port: int
) -> dict[str, list[str]]:
    """The processes of a local platform: Airflow's components and the MLflow server."""
    commands = {name: [airflow_bin(), name] for name in AIRFLOW_COMPONENTS}
    commands["api-server"] += ["--host", HOST, "--port", str(airflow_port)]
    commands["mlflow"] = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        settings.tracking_uri,
        "--default-artifact-root",
        settings.artifact_root,
        "--host",
        HOST,
        "--port",
        str(mlflow_port),
        "--workers",
        "1",
    ]
    return commands


def platform_environment(airflow_port: int, mlflow_port: int) -> dict[str, str]:
    """Where task processes reach Airflow's execution API, and the UIs' own addresses."""
    return {
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{HOST}:{airflow_port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://localhost:{airflow_port}",
        "MAESTRO_AIRFLOW_API_URL": f"http://{HOST}:{airflow_port}",
        "MAESTRO_MLFLOW_UI_URL": f"http://localhost:{mlflow_port}",
    }


def health_urls(airflow_port: int, mlflow_port: int) -> dict[str, str]:
    return {
        "airflow": f"http://{HOST}:{airflow_port}/api/v2/monitor/health",
        "mlflow": f"http://{HOST}:{mlflow_port}/health",
    }


def run_platform(settings: Settings, airflow_port: int, mlflow_port: int, echo) -> int:
    """Start every component, say when they answer, and stop them all on Ctrl-C or SIGTERM."""
    apply_environment(settings)
    os.environ.update(platform_environment(airflow_port, mlflow_port))
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    stopping = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.append(True))
    children: dict[str, subprocess.Popen] = {}
    try:
        for name, command in platform_commands(settings, airflow_port, mlflow_port).items():
            with (logs / f"{name}.log").open("a") as out:
                # own session: a Ctrl-C in the terminal reaches `maestro up` only, which then
                # stops the components in order rather than all at once
                children[name] = subprocess.Popen(
                    command, stdout=out, stderr=out, start_new_session=True
                )
            echo(f"started {name:<14} pid {children[name].pid}, log {logs / (name + '.log')}")
        waiting = health_urls(airflow_port, mlflow_port)
        started = time.perf_counter()
        while not stopping and _all_alive(children, echo):
            for name, url in list(waiting.items()):
                if answers(url):
                    echo(f"{name} answers  ({time.perf_counter() - started:.0f}s)")
                    del waiting[name]
                    if not waiting:
                        _print_addresses(settings, airflow_port, mlflow_port, echo)
            time.sleep(1)
        return 0 if stopping else 1
    finally:
        stop(children, echo)


def _all_alive(children: dict[str, subprocess.Popen], echo) -> bool:
    dead = [name for name, child in children.items() if child.poll() is not None]
    if dead:
        echo(f"stopped: {', '.join(dead)} exited; see its log")
    return not dead


def passwords_file(home: Path) -> Path:
    """Where Airflow's simple auth manager writes the generated password of user `admin`."""
    return home / "airflow" / "simple_auth_manager_passwords.json.generated"


def admin_password(home: Path) -> str:
    import json

    return json.loads(passwords_file(home).read_text())["admin"]


def _print_addresses(settings: Settings, airflow_port: int, mlflow_port: int, echo) -> None:
    passwords = passwords_file(settings.home)
    echo(f"Airflow UI     http://localhost:{airflow_port}  (user admin, password in {passwords})")
    echo(f"MLflow UI      http://localhost:{mlflow_port}")
    echo("Ctrl-C stops everything.")


def stop(children: dict[str, subprocess.Popen], echo, grace: float = 30.0) -> None:
    """SIGTERM every component's process group, then SIGKILL what is left after `grace`."""
    for child in children.values():
        signal_group(child, signal.SIGTERM)  # the whole group: workers and log servers too
    deadline = time.monotonic() + grace
    for name, child in children.items():
        if not reap_group(child, deadline - time.monotonic()):
            echo(f"{name} did not stop in {grace:.0f}s: killed")
    if children:
        echo("stopped")

"""`maestro up`: Airflow's components and the MLflow UI on the platform's embedded state."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from maestro.airflow_env import airflow_bin, apply_environment
from maestro.config import Settings

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")


def platform_commands(
    settings: Settings, airflow_port: int, mlflow_port: int
) -> dict[str, list[str]]:
    """The processes of a local platform: Airflow's components and the MLflow server."""
    commands = {name: [airflow_bin(), name] for name in AIRFLOW_COMPONENTS}
    commands["api-server"] += ["--port", str(airflow_port)]
    commands["mlflow"] = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        settings.tracking_uri,
        "--default-artifact-root",
        settings.artifact_root,
        "--host",
        "127.0.0.1",
        "--port",
        str(mlflow_port),
        "--workers",
        "1",
    ]
    return commands


def run_platform(settings: Settings, airflow_port: int, mlflow_port: int, echo) -> int:
    """Start every component, print where to look, and stop them all on Ctrl-C."""
    apply_environment(settings)
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    children = {}
    for name, command in platform_commands(settings, airflow_port, mlflow_port).items():
        out = (logs / f"{name}.log").open("a")
        children[name] = subprocess.Popen(command, stdout=out, stderr=out)
        echo(f"started {name:<14} pid {children[name].pid}, log {logs / (name + '.log')}")
    passwords = settings.home / "airflow" / "simple_auth_manager_passwords.json.generated"
    echo(f"Airflow UI     http://localhost:{airflow_port}  (user admin, password in {passwords})")
    echo(f"MLflow UI      http://localhost:{mlflow_port}")
    echo("Ctrl-C stops everything.")
    try:
        while all(child.poll() is None for child in children.values()):
            time.sleep(1)
        dead = [n for n, c in children.items() if c.poll() is not None]
        echo(f"stopped: {', '.join(dead)} exited; see its log")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for child in children.values():
            child.terminate()
        for child in children.values():
            child.wait(timeout=30)

"""docker-compose.yaml, the whole stack (no Docker engine here: the file is checked as data):
every service has a healthcheck and a non-root user, every secret comes from .env and stops
the stack when unset, and each command is the one `maestro up --executor celery` runs natively
(tests/integration/test_platform.py runs that native stack)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from maestro.config import Settings
from maestro.platform.services import Ports, platform_commands
from tests.support import PROJECT

COMPOSE_TEXT = "\n".join(  # without its comments
    line
    for line in (PROJECT / "docker-compose.yaml").read_text().splitlines()
    if not line.lstrip().startswith("#")
)
SERVICES = yaml.safe_load(COMPOSE_TEXT)["services"]
ONE_SHOT = {"airflow-init"}
# compose service -> the component `maestro up` starts natively
NATIVE = {
    "airflow-apiserver": "api-server",
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-triggerer": "triggerer",
    "airflow-worker": "worker-1",
    "mlflow": "mlflow",
    "evidently": "evidently",
    "prometheus": "prometheus",
    "pushgateway": "pushgateway",
}
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|FERNET|_KEY$")
FROM_ENV = re.compile(r"\$\{(\w+):\?[^}]+\}")


def test_the_stack_has_every_service():
    assert set(SERVICES) == {
        "postgres",
        "redis",
        "airflow-init",
        *NATIVE,
        "model-server",
        "alertmanager",
        "grafana",
    }
    assert SERVICES["airflow-worker"]["deploy"]["replicas"] == 2


@pytest.mark.parametrize("name", sorted(set(SERVICES) - ONE_SHOT))
def test_each_service_has_a_healthcheck_and_runs_as_a_non_root_user(name: str):
    service = SERVICES[name]
    assert service["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL"), name
    user = str(service["user"]).split(":")[0]
    assert user not in ("root", "0", ""), name


def test_secrets_come_only_from_env_and_stop_the_stack_when_unset():
    for name, service in SERVICES.items():
        for key, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(key):
                assert FROM_ENV.fullmatch(str(value)), f"{name}: {key} = {value!r}"
    # credentials inside URLs and commands too: never a literal, never a default (`:-`)
    for url in re.findall(r"(?:postgresql(?:\+psycopg2)?|redis)://[^\s\"']*@", COMPOSE_TEXT):
        assert FROM_ENV.search(url), url
    assert ":-" not in COMPOSE_TEXT
    assert SERVICES["airflow-apiserver"]["environment"]["MAESTRO_ENV"] == "production"
    example = (PROJECT / ".env.example").read_text()
    for variable in set(FROM_ENV.findall(COMPOSE_TEXT)):
        assert f"# {variable}=" in example, f".env.example does not name {variable}"


def program(command: list[str]) -> list[str]:
    """The program's name and its sub-commands, up to the first option."""
    words = [Path(command[0]).name]
    for part in command[1:]:
        if part.startswith("-"):
            break
        words.append(part)
    return words


def flags(command: list[str]) -> set[str]:
    return {part.split("=")[0] for part in command if part.startswith("--")}


def test_each_command_is_the_one_the_native_platform_runs(tmp_path: Path):
    settings = Settings(
        home=tmp_path,
        env="production",
        executor="celery",
        mlflow_tracking_uri="http://127.0.0.1:5000",
        mlflow_backend_store="postgresql://maestro@127.0.0.1:5432/mlflow",
    )
    native = platform_commands(settings, Ports())
    for name, component in NATIVE.items():
        command = [str(part) for part in SERVICES[name]["command"]]
        if component not in native:  # Debian's Prometheus is not installed here
            continue
        ours = native[component]
        if command[0] in ("airflow", "mlflow", "evidently"):  # the image's programs
            assert program(command) == program(ours), name
        assert flags(command) == flags(ours), name
        values = dict(zip(command, command[1:], strict=False))
        for flag in ("--queues", "--concurrency", "--skip-serve-logs", "--app-name"):
            if flag in flags(ours) and flag in values:
                assert values[flag] == dict(zip(ours, ours[1:], strict=False))[flag], name
    assert SERVICES["airflow-init"]["command"] == ["maestro", "prepare"]
    serve = SERVICES["model-server"]["command"]
    assert serve[:2] == ["maestro", "serve"] and flags(serve) == {"--host", "--port"}


def test_monitoring_services_mount_the_shipped_configuration():
    mounts = {
        name: {v.split(":")[0]: v.split(":")[1] for v in SERVICES[name].get("volumes", [])}
        for name in ("prometheus", "alertmanager", "grafana")
    }
    assert mounts["prometheus"]["./ops/prometheus"] == "/etc/prometheus"
    assert mounts["alertmanager"]["./ops/alertmanager"] == "/etc/alertmanager"
    provisioning = yaml.safe_load(
        (PROJECT / "ops/grafana/provisioning/dashboards/maestro.yml").read_text()
    )
    dashboards = provisioning["providers"][0]["options"]["path"]
    assert mounts["grafana"]["./ops/grafana/dashboards"] == dashboards
    prometheus = yaml.safe_load((PROJECT / "ops/prometheus/prometheus.yml").read_text())
    targets = {
        t for job in prometheus["scrape_configs"] for t in job["static_configs"][0]["targets"]
    }
    assert {t.split(":")[0] for t in targets} <= set(SERVICES)


def test_the_databases_of_every_store_are_created():
    init_sql = (PROJECT / "include" / "sql" / "create_databases.sql").read_text()
    for db in ("mlflow", "optuna", "feast", "monitoring"):
        assert f"CREATE DATABASE {db};" in init_sql

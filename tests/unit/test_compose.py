"""docker-compose.yaml: every platform service shares one configuration, on PostgreSQL, and no
credential is written in it (no Docker engine here: the file is checked as data)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

PROJECT = Path(__file__).resolve().parents[2]


def test_services_share_postgres_stores_and_hold_no_secret():
    text = (PROJECT / "docker-compose.yaml").read_text()
    compose = yaml.safe_load(text)
    services = compose["services"]
    platform = [n for n in services if n.startswith("airflow-") or n == "mlflow"]
    assert {
        "airflow-apiserver",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "airflow-init",
        "mlflow",
    } <= set(platform)
    for name in platform:
        env = services[name]["environment"]
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
        assert env["MAESTRO_MLFLOW_TRACKING_URI"].startswith("postgresql://")
        assert env["MAESTRO_OPTUNA_STORAGE"].startswith("postgresql://")
        assert services[name]["image"] == "maestro-ml:latest"
        for key in ("AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__CORE__FERNET_KEY"):
            assert env[key] == f"${{{key}:?set it in .env}}", key  # one value, from .env
    # Passwords only ever come from the environment (.env), never as literals.
    for url in re.findall(r"postgresql(?:\+psycopg2)?://[^\s\"']+", text):
        assert ":${POSTGRES_PASSWORD" in url, url
    init_sql = (PROJECT / "include" / "sql" / "create_databases.sql").read_text()
    for db in ("mlflow", "optuna"):
        assert f"CREATE DATABASE {db};" in init_sql

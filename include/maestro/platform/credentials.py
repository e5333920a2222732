"""The platform's credentials, none of them in the repository: Airflow's users' passwords in the
file its simple auth manager reads (the environment's for `admin` in production), and MLflow's
basic-auth configuration and signing key in production mode."""

from __future__ import annotations

import os
from pathlib import Path

from maestro.config import Settings
from maestro.files import atomic_write_text


def production_environment(settings: Settings) -> dict[str, str]:
    """What the components need in production: MLflow's auth configuration and its admin's
    credentials (for the server to create the admin, and for clients to sign in)."""
    if not settings.production:
        return {}
    settings.require_secrets(
        "maestro up",
        airflow_password=settings.airflow_password,
        mlflow_admin_password=settings.mlflow_admin_password,
    )
    return {
        "MLFLOW_FLASK_SERVER_SECRET_KEY": mlflow_secret_key(settings),
        "MLFLOW_AUTH_CONFIG_PATH": str(mlflow_auth_config(settings)),
        "MLFLOW_AUTH_ADMIN_PASSWORD": settings.mlflow_admin_password,
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": settings.mlflow_admin_password,
    }


def mlflow_auth_config(settings: Settings) -> Path:
    """MLflow's basic-auth configuration: its user store in the state folder, nobody allowed
    anything by default. The admin's password comes from the environment, never from here."""

    path = settings.home / "mlflow-auth.ini"
    atomic_write_text(
        path,
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{settings.home / 'mlflow-auth.db'}\n"
        "admin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
    )
    return path


def mlflow_secret_key(settings: Settings) -> str:
    """The key MLflow's auth app signs its CSRF tokens with: the environment's, or one made once
    for this state folder (mode 600, never committed), as Airflow's keys are."""
    import secrets

    if os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY"):
        return os.environ["MLFLOW_FLASK_SERVER_SECRET_KEY"]
    path = settings.home / "mlflow-secret-key"
    atomic_write_text(path, secrets.token_urlsafe(32), keep_existing=True)
    return path.read_text()


def airflow_passwords(settings: Settings) -> None:
    """A password for every user of Airflow's simple auth manager, in the file it reads (mode
    600) before the api-server starts: the environment's for `admin` in production, else one
    made here. Airflow then never generates one, which it would print into its log."""
    import json
    import secrets

    from airflow.configuration import conf

    users = [
        entry.split(":")[0].strip()
        for entry in conf.get("core", "simple_auth_manager_users", fallback="admin:admin").split(
            ","
        )
        if entry.strip()
    ]
    path = passwords_file(settings.home)
    known = json.loads(path.read_text()) if path.exists() else {}
    if settings.production:
        known["admin"] = settings.airflow_password
    for user in users:
        known.setdefault(user, secrets.token_urlsafe(12))
    atomic_write_text(path, json.dumps(known))


def passwords_file(home: Path) -> Path:
    """Where Airflow's simple auth manager writes the generated password of user `admin`."""
    return home / "airflow" / "simple_auth_manager_passwords.json.generated"


def admin_password(home: Path) -> str:
    import json

    return json.loads(passwords_file(home).read_text())["admin"]

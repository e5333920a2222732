"""One settings object for the whole platform, read from the environment and `.env`.

Every backing store is one setting: point it at PostgreSQL (or anything SQLAlchemy speaks)
and nothing else changes. Defaults are embedded: SQLite files and local folders under one
state folder (`MAESTRO_HOME`, default `<project>/.maestro`).
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict

from maestro.vocabulary import LOG_DRAIN_SECONDS

PROJECT_DIR = Path(__file__).resolve().parents[2]
MIN_SECRET_LENGTH = 12  # MLflow's own minimum for its admin password
PLACEHOLDERS = {"CHANGE_ME", "CHANGEME", "CHANGE-ME", "PASSWORD", "SECRET", "ADMIN"}


class Settings(BaseSettings):
    """Platform settings; every field is overridable as `MAESTRO_<FIELD>`."""

    model_config = SettingsConfigDict(
        env_prefix="MAESTRO_", env_file=PROJECT_DIR / ".env", extra="ignore"
    )

    # `production` refuses to start what would run without its secrets (see `require_secrets`)
    env: Literal["development", "production"] = "development"
    project_dir: Path = PROJECT_DIR
    home: Path = PROJECT_DIR / ".maestro"
    specs_dir: Path = PROJECT_DIR / "include" / "specs"
    feature_repo: Path = PROJECT_DIR / "feature_repo"
    # Where every client (tasks, CLI, model server) reaches MLflow's tracking and registry: a
    # store (SQLAlchemy URL; default SQLite in home) or an MLflow server (`http://host:port`),
    # which then keeps the data in `mlflow_backend_store` and serves the artifacts
    # (`--serve-artifacts`); `maestro up` starts that server when its host is this machine.
    mlflow_tracking_uri: str | None = None
    mlflow_backend_store: str | None = None
    mlflow_artifact_root: str | None = None
    # Optuna storage: an SQLAlchemy URL, or empty for one journal file per study in home.
    optuna_storage: str | None = None
    # Feast registry: a file path or an SQLAlchemy URL; default: file in home. Online store:
    # `redis://host:port[/db]`, or none for SQLite in home.
    feast_registry: str | None = None
    feast_online_store: str | None = None
    # Airflow's executor: `local`, or `celery` (Redis broker, PostgreSQL metadata database and
    # result backend); `maestro up` starts `celery_workers` workers of `worker_concurrency` slots.
    executor: Literal["local", "celery"] = "local"
    celery_broker: str = "redis://127.0.0.1:6379/0"
    celery_workers: int = 1
    worker_concurrency: int = 2
    # Folders a spec's CSV or parquet source may read from (separated by `:`); default: the
    # project, its sibling `shared/data` and the state folder. A path outside them is refused.
    data_roots: str | None = None
    # Packages a spec's own trainers may come from (`trainers.<name>.function`), separated by
    # `,`; default: `trainers`, the folder `include/trainers/`. Anything else is refused.
    trainer_packages: str = "trainers"
    # Parallel trial workers per tuning step (mapped Airflow tasks); a spec may override.
    tune_workers: int = 2
    # How often a waiting approval looks for a decision by tag (seconds).
    approval_poll_seconds: float = 5.0
    # Where people open the MLflow UI (links in approval requests); `maestro up` sets it.
    mlflow_ui_url: str | None = None
    # Airflow's REST API, for what happens outside a DAG run (`maestro promote` emits the
    # promotion's asset event there); the password defaults to the one `maestro up` generated.
    airflow_api_url: str = "http://localhost:8080"
    airflow_username: str = "admin"
    airflow_password: str | None = None
    # The MLflow server's admin password (production: the server runs with authentication).
    mlflow_admin_password: str | None = None
    # Where each run's snapshot of its data is kept (content-addressed, written once): a
    # folder (default: `<home>/snapshots`) or an object-storage URL (`s3://bucket/prefix`),
    # reached with the credentials of the Airflow connection `snapshot_store_conn_id`.
    snapshot_store: str | None = None
    snapshot_store_conn_id: str | None = None
    # Model server: its serving plan file, the prediction log (a folder for partitioned
    # parquet, or a postgresql:// URL), an optional bearer token, and request limits.
    serving_plan: Path | None = None
    prediction_log: str | None = None
    prediction_log_conn_id: str | None = None  # the Airflow connection of an object-store log
    serving_token: str | None = None
    serving_max_rows: int = 10_000
    serving_max_body_bytes: int = 8 * 1024 * 1024
    # The prediction log: rows and bytes that may wait for its writer (in the server, and
    # apart in the writer) before requests are refused with 503; how long a stopping server
    # writes what waits before spilling the rest for the next start.
    prediction_log_max_rows: int = 1_000_000
    prediction_log_max_bytes: int = 128 * 1024 * 1024
    prediction_log_drain_seconds: float = LOG_DRAIN_SECONDS
    # a request's head not received whole within this: the connection is closed; its body: 408
    serving_header_timeout_seconds: float = 10.0
    serving_body_timeout_seconds: float = 30.0
    # Server processes on one port (`maestro serve --workers N`): default, the CPUs this
    # process may run on; the Kubernetes manifests set it to the container's CPU limit.
    serving_workers: int | None = None
    # LightGBM threads for a batch request (single rows take one): default, the CPUs this
    # process may run on shared among the workers.
    serving_threads: int | None = None
    # Deployments: the local server's port; the Kubernetes namespace and the server's image.
    serving_port: int = 8000
    k8s_namespace: str = "maestro"
    serving_image: str = "maestro-ml:latest"
    # Batch scoring output: a folder (parquet per model and date) or a postgresql:// URL.
    batch_output: str | None = None
    # Monitoring: where jobs push their figures for Prometheus (none: not pushed), and the
    # Evidently workspace that keeps each monitoring run's report (default: a folder in home).
    pushgateway_url: str | None = None
    evidently_workspace: Path | None = None
    # E-mail notifications (a spec's `monitoring.notify.email`) go through this SMTP server.
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_from: str = "maestro@localhost"

    @property
    def production(self) -> bool:
        return self.env == "production"

    def require_secrets(self, component: str, **secrets: str | None) -> None:
        """In production, refuse to start `component` when a secret (a setting, by field name)
        is unset, a placeholder or shorter than `MIN_SECRET_LENGTH`; in development, nothing is
        required."""
        if not self.production:
            return
        missing = [
            f"MAESTRO_{name.upper()}"
            for name, value in secrets.items()
            if not value
            or value.strip().upper() in PLACEHOLDERS
            or len(value.strip()) < MIN_SECRET_LENGTH
        ]
        if missing:
            from maestro.errors import BadInput

            raise BadInput(
                f"MAESTRO_ENV=production: {component} will not start without "
                f"{', '.join(missing)} (at least {MIN_SECRET_LENGTH} characters, set in the "
                "environment or .env; there are no defaults)"
            )

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def tracking_server(self) -> bool:
        """Clients talk to an MLflow server over HTTP (not to its database)."""
        return self.tracking_uri.startswith(("http://", "https://"))

    @property
    def backend_store(self) -> str:
        """Where MLflow's data lives: the tracking URI itself, or the server's backend store."""
        if not self.tracking_server:
            return self.tracking_uri
        return self.mlflow_backend_store or f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or (self.home / "mlartifacts").as_uri()

    @property
    def plan_path(self) -> Path:
        return self.serving_plan or self.home / "serving" / "plan.json"

    @property
    def server_processes(self) -> int:
        return self.serving_workers or len(os.sched_getaffinity(0))

    @property
    def compiled_forests(self) -> Path:
        """Where the model server keeps LightGBM forests compiled for batches."""
        return self.home / "forests"

    @property
    def scoring_threads(self) -> int:
        cpus = len(os.sched_getaffinity(0))
        return self.serving_threads or max(1, cpus // self.server_processes)

    @property
    def prediction_log_location(self) -> str:
        return self.prediction_log or str(self.home / "prediction_log")

    @property
    def evidently_dir(self) -> Path:
        return self.evidently_workspace or self.home / "evidently"

    @property
    def trainer_package_names(self) -> list[str]:
        return [p.strip() for p in self.trainer_packages.split(",") if p.strip()]

    @property
    def source_roots(self) -> list[Path]:
        if self.data_roots:
            return [Path(p).resolve() for p in self.data_roots.split(os.pathsep) if p]
        shared = self.project_dir.parent / "shared" / "data"
        return [self.project_dir.resolve(), shared.resolve(), self.home.resolve()]

    @property
    def snapshot_store_location(self) -> str:
        return self.snapshot_store or str(self.home / "snapshots")

    @property
    def feast_dir(self) -> Path:
        return self.home / "feast"

    def optuna_url(self, study: str) -> str:
        return self.optuna_storage or f"journal://{self.home / 'optuna' / (study + '.journal')}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once; `get_settings.cache_clear()` re-reads)."""
    return Settings()


def export_environment(settings: Settings) -> dict[str, str]:
    """Environment for Airflow, MLflow and Feast processes started on these settings."""
    env = {
        "MAESTRO_HOME": str(settings.home),
        "MAESTRO_PROJECT_DIR": str(settings.project_dir),
        "AIRFLOW_HOME": str(settings.home / "airflow"),
        "AIRFLOW_CONFIG": str(settings.project_dir / "airflow.cfg"),
        # both: MLflow puts whatever a process last set into its environment, and a registry
        # URI inherited from another state would win over the tracking URI
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.tracking_uri,
        "MAESTRO_FEAST_DATA": str(settings.feast_dir / "data"),
        # MLflow's telemetry thread sets and deletes an environment variable while requests
        # to an MLflow server iterate the environment (a KeyError in a trial's logging)
        "MLFLOW_DISABLE_TELEMETRY": "true",
        **executor_environment(settings),
        "PYTHONPATH": os.pathsep.join(
            [str(settings.project_dir / "include"), os.environ.get("PYTHONPATH", "")]
        ).rstrip(os.pathsep),
    }
    return env


def executor_environment(settings: Settings) -> dict[str, str]:
    """Airflow's executor settings: the CeleryExecutor and its broker, when chosen (its result
    backend is Airflow's default, the metadata database)."""
    if settings.executor != "celery":
        return {}
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__CELERY__BROKER_URL": settings.celery_broker,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(settings.worker_concurrency),
    }

"""Test-wide set-up: one state folder per session, set before anything imports Airflow.

Airflow reads its configuration once per process, so its metadata database stays the
session's; MLflow, Feast and Optuna follow `MAESTRO_HOME`, which tests may move per test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
DAGS = PROJECT / "dags"
SESSION_HOME = Path(tempfile.mkdtemp(prefix="maestro-tests-"))

os.environ["MAESTRO_HOME"] = str(SESSION_HOME)
os.environ.pop("MAESTRO_SPECS_DIR", None)
os.environ.pop("MLFLOW_TRACKING_URI", None)
os.environ.pop("MLFLOW_REGISTRY_URI", None)
from maestro.config import get_settings  # noqa: E402 - after MAESTRO_HOME is set
from maestro.platform.airflow_env import apply_environment  # noqa: E402

get_settings.cache_clear()
apply_environment(get_settings())
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{SESSION_HOME}/airflow/airflow.db"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Airflow's metadata database for the session, migrated once, by the first test that
    needs it (DAG runs); the fast tier never pays for it."""
    subprocess.run(
        [str(Path(sys.executable).with_name("airflow")), "db", "migrate"],
        check=True,
        capture_output=True,
    )


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Fresh MLflow/Feast/Optuna state for one test (Airflow's database stays the session's)."""
    monkeypatch.setenv("MAESTRO_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MAESTRO_APPROVAL_POLL_SECONDS", "0.5")
    # a test's own source files lie in its folder: a data folder beside the default ones
    roots = [PROJECT, SHARED_DATA, tmp_path]
    monkeypatch.setenv("MAESTRO_DATA_ROOTS", os.pathsep.join(map(str, roots)))
    # MLflow writes the URIs a process sets into its environment: a test starts with none
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


def write_specs(folder: Path, overrides: dict[str, dict]) -> Path:
    """Copies of the shipped specs with some fields changed (e.g. a smaller demo); a mapping
    is merged into the spec's own, unless it changes the source's format."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (PROJECT / "include" / "specs").glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        for key, value in overrides.get(path.stem, {}).items():
            old = raw.get(key)
            same_kind = isinstance(old, dict) and value.get("format", old.get("format")) == old.get(
                "format"
            )
            if isinstance(value, dict) and same_kind:
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        (folder / path.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


@pytest.fixture
def use_specs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings):
    """`use_specs(overrides)`: point the platform at copies of the shipped specs with some
    fields changed (see `write_specs`), and return the settings re-read to use them."""

    def use(overrides: dict[str, dict], folder: str = "specs"):
        specs = write_specs(tmp_path / folder, overrides)
        monkeypatch.setenv("MAESTRO_SPECS_DIR", str(specs))
        get_settings.cache_clear()
        return get_settings()

    return use


@pytest.fixture
def small_specs(use_specs):
    """Specs sized for tests: a 3,000-row demo; settings re-read to use them."""
    return use_specs({"demo": {"source": {"rows": 3000}, "governance": {"latency_budget_ms": 500}}})


@pytest.fixture
def demo_versions(tmp_path: Path):
    """`demo_versions(settings, count, **tags)`: `count` versions of `demo` in the settings'
    MLflow registry (real, SQLite), each with `tags`; their version numbers."""

    def make(settings, count: int, **tags: str) -> list[str]:
        from maestro import tracking

        mlc = tracking.client(settings)
        if not mlc.search_registered_models("name = 'demo'"):
            mlc.create_registered_model("demo")
        source = tmp_path / "model"
        source.mkdir(exist_ok=True)
        versions = []
        for _ in range(count):
            version = str(mlc.create_model_version("demo", source.as_uri()).version)
            for key, value in tags.items():
                mlc.set_model_version_tag("demo", version, key, value)
            versions.append(version)
        return versions

    return make


@pytest.fixture
def demo_champion(settings):
    """A small LightGBM pipeline of `demo`, logged with its signature and input example,
    registered and aliased champion in the test's registry: (pipeline, the rows it saw)."""
    import mlflow

    from maestro import tracking
    from maestro.data.synthetic import generate
    from maestro.spec import get_spec
    from maestro.training.families import build_estimator, fit
    from maestro.training.stages import log_pipeline

    spec = get_spec("demo", settings)
    frame = generate(2000)
    X, y = frame[spec.feature_names], frame[spec.target.name].to_numpy()
    params = {"n_estimators": 30, "num_leaves": 15}
    pipeline = fit(build_estimator(spec, "lightgbm", params), spec, "lightgbm", X, y)
    with mlflow.start_run(experiment_id=tracking.experiment_id(settings, "demo")):
        logged = log_pipeline(pipeline, spec, X.dropna().head(5))
    version = mlflow.register_model(logged.model_uri, "demo").version
    tracking.client(settings).set_registered_model_alias("demo", "champion", str(version))
    return pipeline, frame


POSTGRES = os.environ.get("MAESTRO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def postgres_admin():
    """A connection to the test PostgreSQL server's `postgres` database, or a skip (a failure
    under MAESTRO_REQUIRE_POSTGRES) when none answers."""
    import psycopg2

    try:
        conn = psycopg2.connect(f"{POSTGRES}/postgres", connect_timeout=5)
    except psycopg2.OperationalError as error:
        if os.environ.get("MAESTRO_REQUIRE_POSTGRES"):
            pytest.fail(
                f"PostgreSQL at {POSTGRES} is required (MAESTRO_REQUIRE_POSTGRES) but: {error}"
            )
        pytest.skip(
            f"no PostgreSQL server answers at {POSTGRES}; set MAESTRO_REQUIRE_POSTGRES to fail "
            "instead"
        )
    conn.autocommit = True
    return conn


@contextmanager
def postgres_databases(*roles: str):
    """Fresh, uniquely named databases, one per role, as {role: URL}; dropped afterwards."""
    import uuid

    conn = postgres_admin()
    suffix = uuid.uuid4().hex[:10]
    names = {role: f"maestro_test_{role}_{suffix}" for role in roles}
    with conn.cursor() as cur:
        for name in names.values():
            cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {role: f"{POSTGRES}/{name}" for role, name in names.items()}
    finally:
        with conn.cursor() as cur:
            for name in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


MARIADB = os.environ.get("MAESTRO_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")


@contextmanager
def mariadb_database():
    """A fresh, uniquely named MariaDB database as its SQLAlchemy URL, dropped afterwards; a
    skip (a failure under MAESTRO_REQUIRE_MARIADB) when no server answers."""
    import uuid

    import sqlalchemy

    engine = sqlalchemy.create_engine(MARIADB, poolclass=sqlalchemy.pool.NullPool)
    name = f"maestro_test_{uuid.uuid4().hex[:10]}"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    except sqlalchemy.exc.OperationalError as error:
        if os.environ.get("MAESTRO_REQUIRE_MARIADB"):
            pytest.fail(f"MariaDB at {MARIADB} is required (MAESTRO_REQUIRE_MARIADB) but: {error}")
        pytest.skip(f"no MariaDB answers at {MARIADB}; set MAESTRO_REQUIRE_MARIADB to fail instead")
    try:
        yield f"{MARIADB}/{name}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        engine.dispose()


REDIS = os.environ.get("MAESTRO_TEST_REDIS", "redis://127.0.0.1:6379")


@contextmanager
def redis_databases(count: int):
    """`count` empty Redis databases (numbers 1-15, as redis:// URLs), flushed afterwards; a
    skip (a failure under MAESTRO_REQUIRE_REDIS) when no Redis answers."""
    import random

    import redis

    try:
        found = [n for n in range(1, 16) if redis.Redis.from_url(f"{REDIS}/{n}").dbsize() == 0]
    except redis.exceptions.ConnectionError as error:
        if os.environ.get("MAESTRO_REQUIRE_REDIS"):
            pytest.fail(f"Redis at {REDIS} is required (MAESTRO_REQUIRE_REDIS) but: {error}")
        pytest.skip(f"no Redis answers at {REDIS}; set MAESTRO_REQUIRE_REDIS to fail instead")
    if len(found) < count:
        pytest.fail(f"Redis at {REDIS} has fewer than {count} empty databases")
    urls = [f"{REDIS}/{n}" for n in random.sample(found, count)]
    try:
        yield urls
    finally:
        for url in urls:
            redis.Redis.from_url(url).flushdb()


def needs_shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared reference datasets are not beside the project")
    return path


@contextmanager
def deciding(settings, model: str, decision: str = "approved", by: str = "admin"):
    """Play the approver: answer by tag, as `maestro approve|reject` does, every version of
    `model` that passed its gates and waits for a decision, while the block runs."""
    from maestro import tracking
    from maestro.governance import decisions

    tracking.client(settings).search_registered_models()  # import MLflow's stores here, not
    stop = threading.Event()  # in the thread: two threads importing at once can deadlock
    errors: list[Exception] = []

    def answer() -> None:
        while not stop.is_set():
            try:
                for v in tracking.client(settings).search_model_versions(f"name = '{model}'"):
                    if v.tags.get("validation_status") == "passed" and "approval" not in v.tags:
                        decisions.record_decision(
                            settings, model, v.version, decision, by, "decided by the test", "cli"
                        )
            except Exception as error:  # noqa: BLE001 - reported when the block ends
                errors.append(error)
            stop.wait(0.5)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert not errors, errors


PROMETHEUS_TOOLS = {
    "prometheus": Path("/usr/bin/prometheus"),
    "promtool": Path("/usr/bin/promtool"),
    "alertmanager": Path("/usr/bin/prometheus-alertmanager"),
    "pushgateway": Path("/usr/bin/prometheus-pushgateway"),
    "amtool": Path("/usr/bin/amtool"),
}


@pytest.fixture(scope="session")
def prometheus_tools() -> dict[str, Path]:
    """Debian's Prometheus, promtool, Alertmanager and Pushgateway (`./dev test` installs them
    as root); the tests skip with a message without them, unless MAESTRO_REQUIRE_PROMETHEUS."""
    missing = [str(p) for p in PROMETHEUS_TOOLS.values() if not p.exists()]
    if missing:
        message = (
            f"{', '.join(missing)} absent: `apt-get install prometheus prometheus-alertmanager "
            "prometheus-pushgateway` (./dev test does, as root)"
        )
        if os.environ.get("MAESTRO_REQUIRE_PROMETHEUS"):
            pytest.fail(f"the alerting tests are required (MAESTRO_REQUIRE_PROMETHEUS): {message}")
        pytest.skip(message + "; set MAESTRO_REQUIRE_PROMETHEUS to fail instead")
    return PROMETHEUS_TOOLS


@contextmanager
def webhook_receiver():
    """A webhook on loopback that keeps every JSON body posted to it: (its URL, the bodies)."""
    import json
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hook", received
    finally:
        server.shutdown()

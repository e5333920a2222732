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
from pathlib import Path

import pytest

from tests.support import (
    PROJECT,
    PROMETHEUS_TOOLS,
    SHARED_DATA,
    fit_lightgbm,
    register_version,
    write_specs,
)

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


# What a test needs beyond this process, by the helper or fixture it uses (directly or through
# its fixtures): it gets the marker, so `-m "not browser"` and the like select by need.
NEEDS = {
    "postgres_databases": "postgres",
    "postgres_admin": "postgres",
    "mariadb_database": "mariadb",
    "redis_databases": "redis",
    "prometheus_tools": "prometheus",
    "browser": "browser",
    "needs_torch": "torch",
}


def names_used(function: object) -> set[str]:
    """The global and local names a function's code uses (imports inside it included)."""
    code = getattr(function, "__code__", None)
    return set(code.co_names) | set(code.co_varnames) if code else set()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        used = set(getattr(item, "fixturenames", ())) | names_used(getattr(item, "function", None))
        info = getattr(item, "_fixtureinfo", None)
        for definitions in info.name2fixturedefs.values() if info else ():
            for definition in definitions:
                used |= names_used(definition.func)
        for value in getattr(getattr(item, "callspec", None), "params", {}).values():
            used |= names_used(value)  # a parameter that is a function (a warehouse)
        for marker in sorted({NEEDS[name] for name in used if name in NEEDS}):
            item.add_marker(marker)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(SESSION_HOME, ignore_errors=True)


def fresh_state(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point the platform at a fresh state folder in `folder` (`home`; Airflow's database stays
    the session's)."""
    monkeypatch.setenv("MAESTRO_HOME", str(folder / "home"))
    monkeypatch.setenv("MAESTRO_APPROVAL_POLL_SECONDS", "0.5")
    # a test's own source files lie in its folder: a data folder beside the default ones
    roots = [PROJECT, SHARED_DATA, folder]
    monkeypatch.setenv("MAESTRO_DATA_ROOTS", os.pathsep.join(map(str, roots)))
    # MLflow writes the URIs a process sets into its environment: a test starts with none
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    get_settings.cache_clear()


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Fresh MLflow/Feast/Optuna state for one test."""
    fresh_state(tmp_path, monkeypatch)
    yield get_settings()
    get_settings.cache_clear()


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
    from maestro.data.synthetic import generate
    from maestro.spec import get_spec

    spec = get_spec("demo", settings)
    frame = generate(2000)
    pipeline = fit_lightgbm(spec, frame, {"n_estimators": 30, "num_leaves": 15})
    register_version(settings, spec, pipeline, frame)
    return pipeline, frame


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

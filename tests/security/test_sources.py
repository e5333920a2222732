"""A spec's source reads and only reads: a SQL source is one statement in a read-only
transaction (PostgreSQL and MariaDB, for real), its URL comes from a variable of its own (not
the platform's settings), and a file source lies inside the data folders."""

from __future__ import annotations

import pytest
import sqlalchemy

from maestro.config import get_settings
from maestro.data import sources
from maestro.spec import SpecError, get_spec
from tests.support import mariadb_database, postgres_databases
from tests.unit.data.test_sources import good_frame


def postgres_warehouse() -> tuple[object, str]:
    context = postgres_databases("warehouse")
    url = context.__enter__()["warehouse"].replace("postgresql://", "postgresql+psycopg2://")
    return context, url


def mariadb_warehouse() -> tuple[object, str]:
    context = mariadb_database()
    return context, context.__enter__()


@pytest.fixture(
    params=[
        pytest.param(postgres_warehouse, id="postgresql"),
        pytest.param(mariadb_warehouse, id="mariadb"),
    ]
)
def warehouse(request, monkeypatch):
    """A real database holding a `customers` table, its URL in MAESTRO_SOURCE_WAREHOUSE."""
    context, url = request.param()
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    good_frame(300).to_sql("customers", engine, index=False)
    monkeypatch.setenv("MAESTRO_SOURCE_WAREHOUSE", url)
    try:
        yield engine
    finally:
        engine.dispose()
        context.__exit__(None, None, None)


def read(use_specs, query: str, variable: str = "MAESTRO_SOURCE_WAREHOUSE"):
    use_specs({"demo": {"source": {"format": "sql", "query": query, "connection_env": variable}}})
    settings = get_settings()
    return sources.read_source(get_spec("demo", settings), settings)


def rows(engine) -> int:
    with engine.connect() as conn:
        return conn.exec_driver_sql("SELECT count(*) FROM customers").scalar()


def test_a_sql_source_reads_one_statement_in_a_read_only_transaction(use_specs, warehouse):
    assert len(read(use_specs, "SELECT * FROM customers WHERE age >= 30;")) > 0
    with pytest.raises(sources.DataError, match="one statement .* found 3"):
        read(use_specs, "COMMIT; DROP TABLE customers; SELECT 1 AS id")
    with pytest.raises(sources.DataError, match="a SELECT is read, not insert"):
        read(use_specs, "INSERT INTO customers (age) VALUES (1)")
    if warehouse.dialect.name == "postgresql":  # a write inside one SELECT
        with pytest.raises(sources.DataError, match="read-only transaction|data-modifying"):
            read(use_specs, "WITH d AS (DELETE FROM customers RETURNING *) SELECT * FROM d")
    assert rows(warehouse) == 300


@pytest.mark.parametrize(
    "variable", ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "MAESTRO_MLFLOW_BACKEND_STORE", "path"]
)
def test_a_sql_source_may_not_read_the_platforms_own_settings(use_specs, variable):
    with pytest.raises(SpecError, match="source.sql.connection_env"):
        read(use_specs, "SELECT 1", variable)


def test_a_file_source_lies_inside_the_data_folders(use_specs, tmp_path, monkeypatch):
    use_specs({"demo": {"source": {"format": "csv", "path": "/etc/shadow"}}})
    settings = get_settings()
    with pytest.raises(SpecError, match="source.path: /etc/shadow is outside the data folders"):
        sources.read_source(get_spec("demo", settings), settings)
    good_frame(200).to_csv(tmp_path / "mine.csv", index=False)
    use_specs({"demo": {"source": {"format": "csv", "path": str(tmp_path / "mine.csv")}}})
    monkeypatch.setenv("MAESTRO_DATA_ROOTS", str(tmp_path))
    get_settings.cache_clear()
    settings = get_settings()
    assert len(sources.read_source(get_spec("demo", settings), settings)) == 200

"""SQL sources: one read-only SELECT, its rows limited to the run's window by the database
and fetched in chunks from a server-side cursor."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pandas as pd

from maestro.errors import DataError
from maestro.spec import ModelSpec
from maestro.spec.sources import SqlSource

if TYPE_CHECKING:
    import sqlalchemy

    from maestro.data.sources import Window

log = logging.getLogger(__name__)


# how each database is told that a transaction only reads, and that times are UTC (SQLAlchemy
# dialect names)
READ_ONLY = {
    "postgresql": ("SET TRANSACTION READ ONLY", "SET TIME ZONE 'UTC'"),
    # MariaDB too; before the query's transaction
    "mysql": ("SET SESSION TRANSACTION READ ONLY", "SET time_zone = '+00:00'"),
    "mariadb": ("SET SESSION TRANSACTION READ ONLY", "SET time_zone = '+00:00'"),
    "sqlite": ("PRAGMA query_only = ON",),
}


@dataclass(frozen=True)
class Pushdown:
    """The window as a condition on one of the query's columns, bounds as UTC text (which
    PostgreSQL and MariaDB compare with a date, timestamp or ISO-text column alike)."""

    column: str
    start: str | None
    end: str | None
    inclusive_end: bool


def pushdown_filter(spec: ModelSpec, window: Window) -> Pushdown | None:
    """The condition that keeps the window's rows in the database: on the event timestamp,
    or on the date column it is built from (whole days, so the end day is kept)."""
    start, end = window
    ts = spec.timestamp
    if (start is None and end is None) or ts.synthesize_start:
        return None
    if ts.from_date:
        day = "%Y-%m-%d"
        return Pushdown(
            ts.from_date,
            start.strftime(day) if start is not None else None,
            end.strftime(day) if end is not None else None,
            inclusive_end=True,
        )
    stamp = "%Y-%m-%d %H:%M:%S"
    return Pushdown(
        ts.column,
        start.tz_convert("UTC").strftime(stamp) if start is not None else None,
        end.tz_convert("UTC").strftime(stamp) if end is not None else None,
        inclusive_end=False,
    )


def _windowed(
    query: str, pushdown: Pushdown | None, quote: Callable[[str], str]
) -> tuple[str, dict]:
    """The user's statement wrapped so that the database filters it to the window."""
    if pushdown is None:
        return query, {}
    column = quote(pushdown.column)
    conditions, params = [], {}
    if pushdown.start is not None:
        conditions.append(f"src.{column} >= :window_start")
        params["window_start"] = pushdown.start
    if pushdown.end is not None:
        conditions.append(f"src.{column} {'<=' if pushdown.inclusive_end else '<'} :window_end")
        params["window_end"] = pushdown.end
    return f"SELECT * FROM ({query}) src WHERE {' AND '.join(conditions)}", params  # nosec B608


def _database_url(source: SqlSource) -> str | sqlalchemy.URL:
    if source.conn_id is not None:
        from maestro.data.connections import get_connection, sqlalchemy_url

        return sqlalchemy_url(get_connection(source.conn_id, "source.conn_id"), "source.conn_id")
    url = os.environ.get(str(source.connection_env))
    if not url:
        raise DataError(
            f"source.connection_env: environment variable {source.connection_env} is not set"
        )
    return url


def read_query(source: SqlSource, pushdown: Pushdown | None, origin: str) -> pd.DataFrame:
    """The query's rows, read in chunks from a server-side cursor in a read-only transaction
    that is rolled back. One statement only: a second (`COMMIT; DROP TABLE t`) could end the
    read-only transaction and write."""
    import sqlalchemy
    import sqlparse
    from sqlalchemy.pool import NullPool

    statements = [s for s in sqlparse.split(source.query) if s.strip().strip(";").strip()]
    if len(statements) != 1:
        raise DataError(f"source.query: one statement (a SELECT) is read, found {len(statements)}")
    kind = sqlparse.parse(statements[0])[0].get_type()
    if kind != "SELECT":
        raise DataError(f"source.query: a SELECT is read, not {kind.lower()}")
    url = _database_url(source)
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool)
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ImportError) as error:
        raise DataError(f"{origin}: cannot use the database URL: {error}") from None
    query, params = _windowed(
        statements[0].strip().rstrip(";"), pushdown, engine.dialect.identifier_preparer.quote
    )
    try:
        with engine.connect() as conn:
            session = READ_ONLY.get(engine.dialect.name)
            if session is None:
                log.warning(
                    "source.query: no read-only transaction on %s; give the source a read-only role",
                    engine.dialect.name,
                )
            for statement in session or ():
                conn.exec_driver_sql(statement)
            streaming = conn.execution_options(
                stream_results=True, max_row_buffer=source.chunk_rows
            )
            try:
                chunks = pd.read_sql_query(
                    sqlalchemy.text(query), streaming, params=params, chunksize=source.chunk_rows
                )
                frames = list(chunks)
            finally:
                conn.rollback()
    except sqlalchemy.exc.DBAPIError as error:
        raise DataError(
            f"{origin}: {type(error.orig).__name__}: {str(error.orig).strip().splitlines()[0]}"
        ) from None
    finally:
        engine.dispose()
    log.info("%s: read %d rows in %d chunks", origin, sum(map(len, frames)), len(frames))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

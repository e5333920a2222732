"""A source's credentials as Airflow connections: looked up the way a task looks them up, then
turned into what the reader needs (a SQLAlchemy URL, fsspec storage options).

`airflow.sdk.Connection.get` searches, in a task, the configured secrets backend (Vault,
a local secrets file, ...), the `AIRFLOW_CONN_<ID>` environment variables and the metadata
database; outside a task (the CLI, a test) the secrets backend and the environment. The spec
only names the connection, so one spec runs against each deployment's own database.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from maestro.errors import DataError

if TYPE_CHECKING:
    from airflow.sdk import Connection
    from sqlalchemy import URL

# Airflow connection type -> SQLAlchemy dialect+driver; the drivers of the first three are
# installed. Snowflake and BigQuery need their SQLAlchemy dialects (snowflake-sqlalchemy,
# sqlalchemy-bigquery): see the README's "Data where it lives".
SQL_DRIVERS = {
    "postgres": "postgresql+psycopg2",
    "mysql": "mysql+pymysql",
    "sqlite": "sqlite",
    "snowflake": "snowflake",
    "google_cloud_platform": "bigquery",
}
# the extras a connection may carry that are passed on to the driver as URL parameters
DRIVER_EXTRAS = {
    "postgres": ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout"),
    "mysql": ("charset", "connect_timeout"),
    "snowflake": ("warehouse", "role"),
}


def get_connection(conn_id: str, field: str) -> Connection:
    """The Airflow connection `conn_id`; DataError naming the spec's field when none is defined."""
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        return Connection.get(conn_id)
    except AirflowNotFoundException:
        raise DataError(
            f"{field}: Airflow connection {conn_id!r} is not defined (looked in the secrets "
            f"backend, AIRFLOW_CONN_{conn_id.upper()} and, in a task, the metadata database)"
        ) from None


def sqlalchemy_url(conn: Connection, field: str) -> URL:
    """The SQLAlchemy URL of a database connection (postgres, mysql for MySQL and MariaDB,
    sqlite; snowflake and google_cloud_platform with their dialects installed)."""
    from sqlalchemy import URL

    driver = SQL_DRIVERS.get(conn.conn_type or "")
    if driver is None:
        raise DataError(
            f"{field}: Airflow connection {conn.conn_id!r} is of type {conn.conn_type!r}; a SQL "
            f"source reads {', '.join(sorted(SQL_DRIVERS))} connections"
        )
    extra = conn.extra_dejson
    query = {k: str(extra[k]) for k in DRIVER_EXTRAS.get(conn.conn_type or "", ()) if k in extra}
    if conn.conn_type == "sqlite":
        return URL.create(driver, database=conn.host or conn.schema)
    if conn.conn_type == "snowflake":  # account in the extra; database/schema in `schema`
        return URL.create(
            driver,
            username=conn.login,
            password=conn.password,
            host=extra.get("account"),
            database="/".join(p for p in (extra.get("database"), conn.schema) if p) or None,
            query=query,
        )
    if conn.conn_type == "google_cloud_platform":  # service-account key file in the extra
        if "key_path" in extra:
            query["credentials_path"] = str(extra["key_path"])
        return URL.create(driver, host=extra.get("project"), database=conn.schema, query=query)
    return URL.create(
        driver,
        username=conn.login,
        password=conn.password,
        host=conn.host,
        port=conn.port,
        database=conn.schema,
        query=query,
    )


def storage_options(conn: Connection | None, scheme: str) -> dict[str, Any]:
    """fsspec's options for an object store: an `aws` connection's keys, region and endpoint
    for `s3://`; for another store, the connection's extra as the filesystem's own options
    (gcsfs: `token`, `project`; adlfs: `account_name`, `account_key`, ...)."""
    # fail in seconds, not after botocore's minutes of retries, when the store is unreachable
    options: dict[str, Any] = (
        {"config_kwargs": {"connect_timeout": 5, "retries": {"max_attempts": 2}}}
        if scheme == "s3"
        else {}
    )
    if conn is None:
        return options
    extra = conn.extra_dejson
    if scheme != "s3":
        return options | extra
    if conn.conn_type != "aws":
        raise DataError(
            f"source.conn_id: Airflow connection {conn.conn_id!r} is of type "
            f"{conn.conn_type!r}; s3:// reads an aws connection"
        )
    endpoint = extra.get("endpoint_url") or extra.get("service_config", {}).get("s3", {}).get(
        "endpoint_url"
    )
    client = {"region_name": extra["region_name"]} if "region_name" in extra else {}
    return options | {
        "key": conn.login or None,
        "secret": conn.password or None,
        "token": extra.get("aws_session_token"),
        "endpoint_url": endpoint,
        "client_kwargs": client,
    }

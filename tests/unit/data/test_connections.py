"""Airflow connections as sources' credentials: which database URL and which object-store
options each connection type gives, and which spec sources are refused before any read."""

from __future__ import annotations

import pytest
from airflow.sdk import Connection
from pydantic import TypeAdapter, ValidationError

from maestro.data.connections import sqlalchemy_url, storage_options
from maestro.errors import DataError
from maestro.spec.sources import Source


def url(**fields) -> str:
    return sqlalchemy_url(Connection(conn_id="wh", **fields), "source.conn_id").render_as_string(
        hide_password=False
    )


def test_each_database_connection_type_gives_its_sqlalchemy_url():
    assert (
        url(
            conn_type="postgres",
            host="db",
            port=5432,
            login="u",
            password="p@ss",  # pragma: allowlist secret
            schema="dw",
            extra='{"sslmode": "require", "cursor": "x"}',
        )
        == "postgresql+psycopg2://u:p%40ss@db:5432/dw?sslmode=require"  # pragma: allowlist secret
    )
    assert (
        url(conn_type="mysql", host="db", login="root", schema="dw") == "mysql+pymysql://root@db/dw"
    )
    assert url(conn_type="sqlite", host="/data/w.db") == "sqlite:////data/w.db"
    # on paper: these need their dialects (snowflake-sqlalchemy, sqlalchemy-bigquery) installed
    assert (
        url(
            conn_type="snowflake",
            login="u",
            password="p",
            schema="public",
            extra='{"account": "acme-x1", "database": "sales", "warehouse": "wh", "role": "reader"}',
        )
        == "snowflake://u:p@acme-x1/sales/public?role=reader&warehouse=wh"
    )
    assert (
        url(
            conn_type="google_cloud_platform",
            schema="events",
            extra='{"project": "acme", "key_path": "/keys/sa.json"}',
        )
        == "bigquery://acme/events?credentials_path=%2Fkeys%2Fsa.json"
    )
    with pytest.raises(DataError, match="connection 'wh' is of type 'http'; a SQL source reads"):
        url(conn_type="http", host="example.org")


def test_an_aws_connection_gives_s3fs_its_keys_region_and_endpoint():
    conn = Connection(
        conn_id="lake",
        conn_type="aws",
        login="AKID",
        password="s",
        extra='{"region_name": "eu-west-1", "service_config": {"s3": {"endpoint_url": "http://minio:9000"}}}',
    )
    options = storage_options(conn, "s3")
    assert (options["key"], options["secret"], options["endpoint_url"]) == (
        "AKID",
        "s",
        "http://minio:9000",
    )
    assert options["client_kwargs"] == {"region_name": "eu-west-1"}
    gcs = Connection(
        conn_id="gcs",
        conn_type="google_cloud_platform",
        extra='{"token": "/keys/sa.json", "project": "acme"}',
    )
    assert storage_options(gcs, "gs") == {"token": "/keys/sa.json", "project": "acme"}
    with pytest.raises(DataError, match="s3:// reads an aws connection"):
        storage_options(Connection(conn_id="x", conn_type="postgres"), "s3")


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"format": "csv", "path": "http://example.org/a.csv"}, "http:// is not an object store"),
        (
            {"format": "csv", "path": "s3://key:secret@bucket/a.csv"},  # pragma: allowlist secret
            "credentials do not belong in a spec",
        ),
        (
            {"format": "parquet", "path": "data/a.parquet", "conn_id": "lake"},
            "a local path needs no connection",
        ),
        (
            {
                "format": "sql",
                "query": "SELECT 1",
                "conn_id": "wh",
                "connection_env": "MAESTRO_SOURCE_WH",
            },
            "name the database once",
        ),
        ({"format": "sql", "query": "SELECT 1"}, "name the database once"),
        ({"format": "parquet", "path": "s3://b/p/", "partition_key": "Month"}, "not a column name"),
    ],
)
def test_a_source_that_cannot_be_right_is_refused_with_the_spec(source, message):
    with pytest.raises(ValidationError, match=message):
        TypeAdapter(Source).validate_python(source)

"""Where a spec's rows come from: a CSV or parquet file (local, or in object storage), one SQL
statement, or the demo's synthetic data. Credentials are never in a spec: an Airflow connection
(`conn_id`) or, for SQL, an environment variable of the source's own holds them."""

from __future__ import annotations

from typing import Annotated, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from maestro.spec.fields import Column, Strict

# the object stores fsspec reaches with s3fs (installed), gcsfs and adlfs (install to use them)
OBJECT_STORES = ("s3", "gs", "gcs", "az", "abfs", "abfss")

ConnId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=250)]


class FileSource(Strict):
    """A local path (inside the data folders) or an object-storage URL such as
    `s3://bucket/prefix/file.csv`; an object store's credentials come from the Airflow
    connection `conn_id` (without it, the store's own default chain: environment, instance
    role)."""

    path: str
    conn_id: ConnId | None = None

    @field_validator("path")
    @classmethod
    def _a_path_or_an_object_store(cls, path: str) -> str:
        parts = urlsplit(path)
        if len(parts.scheme) <= 1:  # none, or a Windows drive letter
            return path
        if parts.scheme not in OBJECT_STORES:
            raise ValueError(
                f"{parts.scheme}:// is not an object store this platform reads "
                f"({', '.join(s + '://' for s in OBJECT_STORES)}); a local path needs no scheme"
            )
        if parts.username or parts.password:
            raise ValueError(
                "credentials do not belong in a spec: name an Airflow connection in conn_id"
            )
        if not parts.netloc:
            raise ValueError(f"{path} names no bucket or container")
        return path

    @model_validator(mode="after")
    def _a_connection_for_an_object_store(self) -> Self:
        if self.conn_id is not None and not self.in_object_storage:
            raise ValueError("conn_id: a local path needs no connection (only object storage does)")
        return self

    @property
    def in_object_storage(self) -> bool:
        return len(urlsplit(self.path).scheme) > 1


class CsvSource(FileSource):
    format: Literal["csv"]
    na_values: list[str] = []
    encoding: str = "utf-8"


class ParquetSource(FileSource):
    """A parquet file, or a folder of them; with `partition_key`, a hive-partitioned dataset
    (`day=2012-05-01/part-0.parquet`) of which only the run window's partitions are read."""

    format: Literal["parquet"]
    partition_key: Column | None = Field(
        None,
        description="Hive partition key whose values are ISO dates, months or years "
        "(2012-05-01, 2012-05, 2012); it is not read as a column.",
    )


class SqlSource(Strict):
    """One read-only statement (a SELECT), run in a read-only transaction, its rows limited to
    the run's window in the database and read in chunks. The database is an Airflow connection
    (`conn_id`) or the SQLAlchemy URL in an environment variable of its own (`connection_env`)."""

    format: Literal["sql"]
    query: str
    conn_id: ConnId | None = None
    connection_env: str | None = Field(
        None,
        pattern=r"^[A-Z][A-Z0-9_]*$",
        description="Name of the environment variable holding the SQLAlchemy URL.",
    )
    chunk_rows: int = Field(
        100_000, ge=1_000, description="Rows fetched from the database at a time."
    )

    @field_validator("connection_env")
    @classmethod
    def _a_source_variable(cls, name: str | None) -> str | None:
        """The platform's own settings hold its stores' credentials: not a data source."""
        if name and name.startswith(PLATFORM_VARIABLES) and not name.startswith("MAESTRO_SOURCE_"):
            raise ValueError(
                f"{name} is one of the platform's own settings "
                f"({', '.join(p + '*' for p in PLATFORM_VARIABLES)}); name a variable of "
                "its own, e.g. MAESTRO_SOURCE_WAREHOUSE_URL"
            )
        return name

    @model_validator(mode="after")
    def _one_database(self) -> Self:
        if (self.conn_id is None) == (self.connection_env is None):
            raise ValueError(
                "name the database once: conn_id (an Airflow connection) or connection_env"
            )
        return self


PLATFORM_VARIABLES = ("AIRFLOW", "MAESTRO_", "MLFLOW_", "FEAST_")


class DemoSource(Strict):
    """The project's own synthetic data (see `maestro.data.synthetic`)."""

    format: Literal["demo"]
    rows: int = Field(20_000, ge=100)
    seed: int = 7
    drift: float = Field(0.0, ge=0.0, le=1.0)
    bias: float = Field(0.0, ge=0.0, le=1.0)
    noise: float = Field(0.0, ge=0.0, le=1.0)


Source = Annotated[
    CsvSource | ParquetSource | SqlSource | DemoSource, Field(discriminator="format")
]

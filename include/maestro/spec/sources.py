"""Where a spec's rows come from: a CSV or parquet file, one SQL statement, or the demo's
synthetic data."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from maestro.spec.fields import Strict


class CsvSource(Strict):
    format: Literal["csv"]
    path: str
    na_values: list[str] = []
    encoding: str = "utf-8"


class ParquetSource(Strict):
    format: Literal["parquet"]
    path: str


class SqlSource(Strict):
    """One read-only statement (a SELECT), run in a read-only transaction."""

    format: Literal["sql"]
    query: str
    connection_env: str = Field(
        pattern=r"^[A-Z][A-Z0-9_]*$",
        description="Name of the environment variable holding the SQLAlchemy URL.",
    )

    @field_validator("connection_env")
    @classmethod
    def _a_source_variable(cls, name: str) -> str:
        """The platform's own settings hold its stores' credentials: not a data source."""
        if name.startswith(PLATFORM_VARIABLES) and not name.startswith("MAESTRO_SOURCE_"):
            raise ValueError(
                f"{name} is one of the platform's own settings "
                f"({', '.join(p + '*' for p in PLATFORM_VARIABLES)}); name a variable of "
                "its own, e.g. MAESTRO_SOURCE_WAREHOUSE_URL"
            )
        return name


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

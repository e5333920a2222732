"""One store abstraction for the platform's append-and-query logs: a table of rows per model,
in partitions (a day), kept as parquet under a folder or as a PostgreSQL table. Which one is
chosen once, from the location (`open_store`); callers only append, replace, read and ask."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pathlib import Path

    import pandas as pd

# (column, operator, value): `>=`, `<`, `=` or `in` (a collection), as pyarrow's filters
Condition = tuple[str, str, Any]
OPERATORS = (">=", "<", "=", "in")


class Store(Protocol):
    """One table of a log: rows of many models, each model's in partitions."""

    table: str

    @property
    def shown(self) -> str:
        """Where the store is, fit for a log line (no password)."""
        ...

    def append(self, model: str, partition: str, frame: pd.DataFrame) -> None:
        """Add `frame`'s rows to `model`'s `partition`."""
        ...

    def replace(self, model: str, partition: str, frame: pd.DataFrame) -> str:
        """Make `frame` the whole of `model`'s `partition` in one step; returns where it is."""
        ...

    def read(
        self,
        model: str,
        where: Sequence[Condition] = (),
        partitions: tuple[str | None, str | None] = (None, None),
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """`model`'s rows that meet every condition, from the partitions between the two
        bounds (inclusive, either open), only `columns` when given; empty when none."""
        ...

    def has(self, model: str) -> bool:
        """Whether any row of `model` was ever stored."""
        ...

    def beside(self, table: str) -> Store:
        """The store of another table in the same place (the same database, or a folder next
        to this one)."""
        ...

    def state_folder(self, name: str, home: Path | None) -> Path:
        """A folder of files kept for this store (beside a parquet table, in the platform's
        state folder for a database)."""
        ...


def is_database(location: str) -> bool:
    return location.startswith(("postgresql://", "postgresql+psycopg2://"))


def open_store(location: str, table: str, **options: Any) -> Store:
    """The store at `location`: a `postgresql://` URL (table `table`), an object-storage URL
    (`s3://bucket/prefix`) or a folder. `options` are the parquet layout's (`model_folder`,
    `partition`, `whole_file`), the database's (`expand`) and the object store's (`conn_id`,
    its Airflow connection), each taken by the kind it is for."""
    from maestro.logs.objects import ObjectStore
    from maestro.logs.parquet import ParquetStore
    from maestro.logs.postgres import PostgresStore

    if is_database(location):
        return PostgresStore(location, table, expand=options.get("expand"))
    layout = {k: options[k] for k in ("model_folder", "partition", "whole_file") if k in options}
    if "://" in location:
        return ObjectStore(location, table, options.get("conn_id"), **layout)
    return ParquetStore(location, table, **layout)


def check_conditions(where: Sequence[Condition], allowed: Sequence[str] | None = None) -> None:
    """Conditions are the code's own, never a caller's text: a wrong one is a bug."""
    for column, operator, _ in where:
        if operator not in OPERATORS or not column.replace("_", "").isalnum():
            raise ValueError(f"unsupported condition on {column!r}: {operator!r}")
        if allowed is not None and column not in allowed:
            raise ValueError(f"unknown column {column!r}")

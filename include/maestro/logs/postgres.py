"""A log table in PostgreSQL: one table for every model, with a `model` column (and a
`partition` column for tables whose partitions are replaced). Table names and columns are the
code's own constants; every value is a bound parameter."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maestro.logs.store import Condition, check_conditions

if TYPE_CHECKING:
    import pandas as pd
    from sqlalchemy.engine import Engine


class PostgresStore:
    def __init__(self, url: str, table: str, expand: tuple[str, str] | None = None) -> None:
        """`expand`: a JSON column whose objects are read out as columns, and their prefix
        (the prediction log's features, `("features", "feature.")`)."""
        if not table.replace("_", "").isalnum():
            raise ValueError(f"not a table name: {table!r}")
        self.url, self.table, self.expand = url, table, expand

    @property
    def shown(self) -> str:
        if "@" not in self.url:
            return f"{self.url} table {self.table}"
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]} table {self.table}"

    @cached_property
    def engine(self) -> Engine:
        """An SQLAlchemy engine (psycopg2 driver), made once."""
        from sqlalchemy import create_engine

        return create_engine(self.url.replace("postgresql://", "postgresql+psycopg2://", 1))

    def append(self, model: str, partition: str, frame: pd.DataFrame) -> None:
        with self.engine.begin() as conn:
            frame.assign(model=model).to_sql(self.table, conn, if_exists="append", index=False)

    def replace(self, model: str, partition: str, frame: pd.DataFrame) -> str:
        from sqlalchemy import text

        with self.engine.begin() as conn:
            if self.engine.dialect.has_table(conn, self.table):
                conn.execute(
                    # B608: constant table, bound values
                    text(f"DELETE FROM {self.table} WHERE model = :m AND partition = :p"),  # nosec B608
                    {"m": model, "p": partition},
                )
            rows = frame.assign(model=model, partition=partition)
            rows.to_sql(self.table, conn, if_exists="append", index=False)
        return self.shown

    def read(
        self,
        model: str,
        where: Sequence[Condition] = (),
        partitions: tuple[str | None, str | None] = (None, None),
        columns: list[str] | None = None,
    ) -> pd.DataFrame:
        """Partitions are a folder's pruning; here the conditions alone choose the rows."""
        import pandas as pd
        from sqlalchemy import inspect, text

        check_conditions(where)
        if not inspect(self.engine).has_table(self.table):
            return pd.DataFrame(columns=columns or [])
        clauses: list[str] = ["model = :m"]
        params: dict[str, Any] = {"m": model}
        for i, (column, operator, value) in enumerate(where):
            if operator == "in":
                clauses.append(f"{column} = ANY(:p{i})")
                params[f"p{i}"] = list(value)
            else:
                clauses.append(f"{column} {operator} :p{i}")
                params[f"p{i}"] = value
        chosen, aliases = self._selected(columns, params)
        # B608: constant table and clauses (checked above), bound values
        query = f"SELECT {chosen} FROM {self.table} WHERE {' AND '.join(clauses)}"  # nosec B608
        with self.engine.connect() as conn:
            frame = pd.read_sql(text(query), conn, params=params)
        frame = frame.drop(columns=["partition"], errors="ignore").rename(columns=aliases)
        if self.expand and self.expand[0] in frame.columns:
            column, prefix = self.expand
            expanded = pd.json_normalize(frame.pop(column).tolist()).add_prefix(prefix)
            frame = pd.concat([frame, expanded], axis=1)
        return frame

    def _selected(
        self, columns: list[str] | None, params: dict[str, Any]
    ) -> tuple[str, dict[str, str]]:
        """The SELECT list for `columns` (all: `*`): an expanded column (`feature.age`) is
        taken out of its JSON object in the query, under an alias renamed back afterwards."""
        if not columns:
            return "*", {}
        chosen, aliases = [], {}
        for i, name in enumerate(columns):
            if self.expand and name.startswith(self.expand[1]):
                params[f"k{i}"] = name.removeprefix(self.expand[1])
                chosen.append(f"{self.expand[0]} -> CAST(:k{i} AS text) AS c{i}")
                aliases[f"c{i}"] = name
            else:
                chosen.append(name)
        return ", ".join(chosen), aliases

    def has(self, model: str) -> bool:
        from sqlalchemy import inspect, text

        if not inspect(self.engine).has_table(self.table):
            return False
        with self.engine.connect() as conn:
            # B608: constant table, bound values
            query = text(f"SELECT 1 FROM {self.table} WHERE model = :m LIMIT 1")  # nosec B608
            return conn.execute(query, {"m": model}).first() is not None

    def beside(self, table: str, **options: Any) -> PostgresStore:
        return PostgresStore(self.url, table, expand=options.get("expand"))

    def state_folder(self, name: str, home: Path | None) -> Path:
        if home is None:
            raise ValueError(f"a {self.table} in a database needs the state folder for {name}")
        return Path(home) / f"{self.table}{name}"

"""What every spec section is made of: strict models (no unknown field, frozen) and column
names as ingest reads them."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict


def normalise_name(column: str) -> str:
    """A source column's name as ingest reads it: lower case, runs of other characters `_`."""
    return re.sub(r"[^0-9a-z]+", "_", column.strip().lower()).strip("_")


def _column_name(name: str) -> str:
    """A column named as ingest names it (what else could it match?). This also keeps every
    name that reaches generated code (`feature_repo/`) free of quotes, spaces and newlines."""
    if normalise_name(name) != name:
        raise ValueError(
            f"{name!r} is not a column name as ingest reads it (lower case letters, digits, "
            f"single underscores): write {normalise_name(name)!r}"
        )
    return name


Column = Annotated[str, AfterValidator(_column_name)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

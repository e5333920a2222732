"""JSON records checked against a version's MLflow signature, column by column (one pass per
column, not per field), so a bad request is named precisely and a good batch costs little."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

NUMERIC_TYPES = {"double": "number", "float": "number", "long": "integer", "integer": "integer"}
TEXT_TYPES = {"string": "string", "boolean": "boolean"}
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
ALLOWED: dict[str, set[type]] = {
    "number": {int, float},
    "integer": {int},
    "string": {str},
    "boolean": {bool},
}


class RequestError(ValueError):
    """A request the server refuses: an HTTP status and a message naming what is wrong."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # number | integer | string | boolean
    required: bool


def columns_of(signature: Any) -> list[Column]:
    """The input columns of an MLflow signature."""
    columns = []
    for spec in signature.inputs.to_dict():
        kind = NUMERIC_TYPES.get(spec["type"]) or TEXT_TYPES.get(spec["type"])
        if kind is None:
            raise ValueError(f"column {spec['name']!r}: unsupported signature type {spec['type']}")
        columns.append(Column(spec["name"], kind, spec.get("required", True)))
    return columns


def to_columns(records: list[dict], columns: list[Column]) -> dict[str, list]:
    """Records to one list per column, or RequestError naming the first bad field."""
    names = [c.name for c in columns]
    expected = set(names)
    for i, record in enumerate(records):
        if type(record) is not dict:
            raise RequestError(422, f"record {i} is a {type(record).__name__}, not an object")
        if record.keys() != expected:
            missing = sorted(expected - record.keys())
            if missing:
                raise RequestError(422, f"record {i}: missing field {missing[0]!r}", missing[0])
            extra = sorted(record.keys() - expected)
            raise RequestError(422, f"record {i}: unknown field {extra[0]!r}", extra[0])
    table = {}
    for column in columns:
        values = [record[column.name] for record in records]
        check_values(column, values, _record_field(column.name))
        table[column.name] = values
    return table


def _record_field(name: str) -> Callable[[int], str]:
    return lambda i: f"record {i}: field {name!r}"


def check_values(column: Column, values: list, where: Callable[[int], str]) -> None:
    """One column's values of the type its signature says (null only where it is optional, no
    infinity), or RequestError naming the first bad one; `where(i)` says where value i is."""
    allowed = ALLOWED[column.kind] | ({type(None)} if not column.required else set())
    types = set(map(type, values))
    if not types <= allowed:
        i, value = next((i, v) for i, v in enumerate(values) if type(v) not in allowed)
        if value is None:
            raise RequestError(422, f"{where(i)} may not be null", column.name)
        raise RequestError(
            422,
            f"{where(i)} must be {'a' if column.kind != 'integer' else 'an'} {column.kind}, "
            f"got {type(value).__name__} {value!r:.40}",
            column.name,
        )
    if column.kind == "number" and (math.inf in values or -math.inf in values):
        i = next(i for i, v in enumerate(values) if v in (math.inf, -math.inf))
        raise RequestError(422, f"{where(i)} is infinite", column.name)
    if int in types and column.kind != "boolean":  # orjson takes integers up to 2**64 - 1
        present = values if type(None) not in types else [v for v in values if v is not None]
        if max(present) > INT64_MAX or min(present) < INT64_MIN:
            i = next(i for i, v in enumerate(values) if v is not None and not _fits_int64(v))
            raise RequestError(
                422,
                f"{where(i)} is out of the 64-bit integer range (send it as a float)",
                column.name,
            )
    elif str in types:
        text = "".join(values) if type(None) not in types else "".join(filter(None, values))
        if "\x00" in text or not (text.isascii() or _is_utf8(text)):
            i = next(i for i, v in enumerate(values) if v is not None and _bad_text(v))
            raise RequestError(
                422,
                f"{where(i)} holds a NUL character or a lone surrogate, which no text can hold",
                column.name,
            )


def _fits_int64(value: Any) -> bool:
    return type(value) is not int or INT64_MIN <= value <= INT64_MAX


def _is_utf8(text: str) -> bool:
    """Whether `text` encodes as UTF-8: false only for a lone surrogate (`"\\ud800"`), which
    the standard JSON parser lets through and no sink of the prediction log can store."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _bad_text(value: str) -> bool:
    return "\x00" in value or not _is_utf8(value)


def parse_json(raw: bytes) -> Any:
    """A request body: orjson, or for a precise message on what it refuses, the standard
    parser (which also takes integers too big for 64 bits and lone surrogates: the checks of
    each column refuse those, naming the field). Nesting deeper than orjson's limit (1,024)
    is refused, not recursed into."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        if "depth limit" in str(error):
            raise RequestError(400, "body is not valid JSON: nested too deep") from None
    try:
        return json.loads(raw, parse_constant=_no_constants)
    except RequestError:
        raise
    except RecursionError:
        raise RequestError(400, "body is not valid JSON: nested too deep") from None
    except ValueError as error:  # ValueError covers integers of over 4,300 digits too
        raise RequestError(400, f"body is not valid JSON: {error}") from None


def _no_constants(name: str) -> None:
    raise RequestError(422, f"{name} is not a number this server accepts")

"""The Open Inference Protocol (KServe V2) over HTTP: an inference request to the columns a
Scorer takes, and predictions to the protocol's answer.

Inputs are columnar: one input per feature (shape `[n]` or `[n, 1]`), or, for a model whose
features are all numeric, one tensor of shape `[n, k]` in the signature's order. Data comes as
JSON (flat or nested, row-major) or in the binary tensor extension (`Inference-Header-Content-
Length`), where a numeric column is one `np.frombuffer` and no Python object per value is made.
Each column is checked as a JSON record's field is: the datatype must fit the signature's type,
null (or NaN) only where the column is optional, no infinity. Errors are the protocol's
`{"error": message}` with the same statuses as the JSON routes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
import orjson

from maestro.models import predicted_labels
from maestro.serving.records import INT64_MAX, Column, RequestError, check_values, parse_json

OUTPUT = "predictions"
PROBABILITIES = "probabilities"  # a multiclass model's second output: rows x classes
FLOATS = {"FP16": "<f2", "FP32": "<f4", "FP64": "<f8"}
INTEGERS = {
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
}
NUMPY_TYPES = {**FLOATS, **INTEGERS, "BOOL": "?"}
ACCEPTED = {  # the datatypes each signature type takes (as JSON: an integer is a number too)
    "number": {*FLOATS, *INTEGERS},
    "integer": set(INTEGERS),
    "string": {"BYTES"},
    "boolean": {"BOOL"},
}
DATATYPE = {"number": "FP64", "integer": "INT64", "string": "BYTES", "boolean": "BOOL"}
LENGTH = struct.Struct("<I")


def model_metadata(
    model: str,
    versions: Sequence[str],
    columns: Sequence[Column],
    classes: Sequence[str] | None = None,
) -> dict:
    """`GET /v2/models/<name>`: the inputs named and typed from the MLflow signature; the
    outputs: the predictions, and for a multiclass model its labels and probabilities."""
    return {
        "name": model,
        "versions": list(versions),
        "platform": "mlflow-sklearn",
        "inputs": [
            {
                "name": c.name,
                "datatype": DATATYPE[c.kind],
                "shape": [-1],
                "parameters": {"required": c.required},
            }
            for c in columns
        ],
        "outputs": output_metadata(classes),
    }


def output_names(classes: Sequence[str] | None) -> tuple[str, ...]:
    """The outputs a request may ask for: a multiclass model answers two."""
    return (OUTPUT,) if classes is None else (OUTPUT, PROBABILITIES)


def output_metadata(classes: Sequence[str] | None) -> list[dict]:
    if classes is None:
        return [{"name": OUTPUT, "datatype": "FP64", "shape": [-1]}]
    return [
        {"name": OUTPUT, "datatype": "BYTES", "shape": [-1]},
        {
            "name": PROBABILITIES,
            "datatype": "FP64",
            "shape": [-1, len(classes)],
            "parameters": {"classes": list(classes)},
        },
    ]


def infer_request(
    raw: bytes,
    header_length: str | None,
    columns: Sequence[Column],
    max_rows: int,
    outputs: Sequence[str] = (OUTPUT,),
) -> tuple[dict[str, list | np.ndarray], str | None]:
    """The columns of an inference request, checked against the signature, and the request's
    `id` if it gave one; RequestError naming the input and row otherwise."""
    header, binary = _split(raw, header_length)
    body = parse_json(header)
    if type(body) is not dict or type(body.get("inputs")) is not list or not body["inputs"]:
        raise RequestError(422, "body must be an inference request: an object with inputs")
    given = body.get("id")
    if given is not None and type(given) is not str:
        raise RequestError(422, "id must be a string")
    _check_outputs(body.get("outputs"), outputs)
    tensors = _tensors(body["inputs"], binary)
    names = {c.name for c in columns}
    if len(tensors) == 1 and tensors[0].name not in names:
        table = _one_tensor(tensors[0], columns)
    else:
        table = _per_feature(tensors, columns)
    rows = len(next(iter(table.values())))
    if rows > max_rows:
        raise RequestError(413, f"batch of {rows} rows is over the limit of {max_rows}")
    return table, given


def infer_response(
    model: str,
    version: str,
    request_id: str,
    given: str | None,
    scores: np.ndarray,
    classes: Sequence[str] | None = None,
) -> bytes:
    """The answer: one FP64 output (a multiclass model's: each row's label as BYTES, and the
    probabilities, rows x classes, row-major); `parameters.request_id` is the id to send
    feedback on."""
    if classes is not None:
        outputs = [
            {
                "name": OUTPUT,
                "datatype": "BYTES",
                "shape": [len(scores)],
                "data": predicted_labels(scores, classes),
            },
            {
                "name": PROBABILITIES,
                "datatype": "FP64",
                "shape": list(scores.shape),
                "data": scores.ravel(),
                "parameters": {"classes": list(classes)},
            },
        ]
    else:
        outputs = [{"name": OUTPUT, "datatype": "FP64", "shape": [len(scores)], "data": scores}]
    return orjson.dumps(
        {
            "model_name": model,
            "model_version": version,
            "id": given if given is not None else request_id,
            "parameters": {"request_id": request_id},
            "outputs": outputs,
        },
        option=orjson.OPT_SERIALIZE_NUMPY,
    )


class _Tensor:
    __slots__ = ("name", "datatype", "shape", "values")

    def __init__(self, name: str, datatype: str, shape: list[int], values: Any) -> None:
        self.name, self.datatype, self.shape, self.values = name, datatype, shape, values


def _split(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    if header_length is None:
        return raw, b""
    if not header_length.isdigit() or int(header_length) > len(raw):
        raise RequestError(
            400, f"Inference-Header-Content-Length {header_length!r} does not fit the body"
        )
    return raw[: int(header_length)], raw[int(header_length) :]


def _check_outputs(outputs: Any, known: Sequence[str]) -> None:
    if outputs is None:
        return
    if type(outputs) is not list:
        raise RequestError(422, "outputs must be a list")
    for output in outputs:
        name = output.get("name") if type(output) is dict else None
        if name not in known:
            answers = " and ".join(map(repr, known))
            raise RequestError(422, f"unknown output {name!r}: this model answers {answers}")


def _tensors(inputs: list, binary: bytes) -> list[_Tensor]:
    """Each input's name, datatype, shape and values (a list from JSON, an array from binary)."""
    found, offset = [], 0
    for index, spec in enumerate(inputs):
        if type(spec) is not dict or type(spec.get("name")) is not str:
            raise RequestError(422, f"input {index} must be an object with a name")
        name, datatype, shape = spec["name"], spec.get("datatype"), spec.get("shape")
        if datatype not in NUMPY_TYPES and datatype != "BYTES":
            raise RequestError(422, f"input {name!r}: unknown datatype {datatype!r}", name)
        if type(shape) is not list or any(type(d) is not int or d < 0 for d in shape):
            raise RequestError(422, f"input {name!r}: shape must be a list of sizes", name)
        size = shape[0] if len(shape) == 1 else math.prod(shape)
        parameters = spec.get("parameters") or {}
        if "binary_data_size" in parameters:
            length = parameters["binary_data_size"]
            if type(length) is not int or length < 0 or offset + length > len(binary):
                raise RequestError(400, f"input {name!r}: binary_data_size does not fit the body")
            chunk = binary[offset : offset + length]
            offset += length
            values = _from_binary(name, datatype, chunk, size)
        else:
            values = _from_json(name, spec.get("data"), size)
        found.append(_Tensor(name, datatype, shape, values))
    if offset != len(binary):
        raise RequestError(400, f"{len(binary) - offset} bytes of binary data belong to no input")
    return found


def _from_binary(name: str, datatype: str, chunk: bytes, size: int) -> Any:
    if datatype == "BYTES":
        values, at = [], 0
        while at < len(chunk):
            if at + LENGTH.size > len(chunk):
                raise RequestError(400, f"input {name!r}: truncated BYTES element", name)
            (length,) = LENGTH.unpack_from(chunk, at)
            at += LENGTH.size
            if at + length > len(chunk):
                raise RequestError(400, f"input {name!r}: truncated BYTES element", name)
            try:
                values.append(chunk[at : at + length].decode())
            except UnicodeDecodeError:
                raise RequestError(
                    422, f"input {name!r} row {len(values)}: not UTF-8 text", name
                ) from None
            at += length
    else:
        dtype = np.dtype(NUMPY_TYPES[datatype])
        if len(chunk) != size * dtype.itemsize:
            raise RequestError(
                400,
                f"input {name!r}: {len(chunk)} bytes of binary data for {size} {datatype} values",
                name,
            )
        return _sized(name, np.frombuffer(chunk, dtype=dtype), size)
    return _sized(name, values, size)


def _sized(name: str, values: Any, size: int) -> Any:
    if len(values) != size:
        raise RequestError(422, f"input {name!r}: {len(values)} values for its shape", name)
    return values


def _from_json(name: str, data: Any, size: int) -> list:
    if type(data) is not list:
        raise RequestError(422, f"input {name!r}: data must be a list", name)
    while data and type(data[0]) is list:  # nested, row-major: flatten
        if not all(type(d) is list for d in data):
            raise RequestError(422, f"input {name!r}: data nests unevenly", name)
        data = [v for d in data for v in d]
    if len(data) != size:
        raise RequestError(422, f"input {name!r}: {len(data)} values, its shape holds {size}", name)
    return data


def _rows_of(tensor: _Tensor, width: int) -> int:
    shape = tensor.shape
    if len(shape) == 1 or (len(shape) == 2 and shape[1] == width):
        return shape[0]
    expected = "[n]" if width == 1 else f"[n, {width}]"
    raise RequestError(
        422, f"input {tensor.name!r}: shape {shape}, expected {expected}", tensor.name
    )


def _per_feature(tensors: list[_Tensor], columns: Sequence[Column]) -> dict:
    by_name: dict[str, _Tensor] = {}
    known = {c.name for c in columns}
    for tensor in tensors:
        if tensor.name not in known:
            raise RequestError(422, f"unknown input {tensor.name!r}", tensor.name)
        if tensor.name in by_name:
            raise RequestError(422, f"input {tensor.name!r} is given twice", tensor.name)
        by_name[tensor.name] = tensor
    missing = [c.name for c in columns if c.name not in by_name]
    if missing:
        raise RequestError(422, f"missing input {missing[0]!r}", missing[0])
    rows = {t.name: _rows_of(t, 1) for t in tensors}
    counts = set(rows.values())
    if len(counts) > 1:
        raise RequestError(422, f"inputs have different numbers of rows: {rows}")
    if counts == {0}:
        raise RequestError(422, "empty batch: send at least one row")
    return {c.name: _column(c, by_name[c.name]) for c in columns}


def _column(column: Column, tensor: _Tensor) -> Any:
    """One input's values as the scorer takes them, checked as a JSON field would be."""
    name, datatype = column.name, tensor.datatype
    if datatype not in ACCEPTED[column.kind]:
        raise RequestError(
            422,
            f"input {name!r}: datatype {datatype} does not fit its type {column.kind} "
            f"(send {' or '.join(sorted(ACCEPTED[column.kind]))})",
            name,
        )
    values = tensor.values
    if isinstance(values, np.ndarray):
        return _checked_array(column, values)
    if datatype in INTEGERS and column.kind != "integer":  # an INT64 input holds integers
        column = Column(name, "integer", column.required)
    check_values(column, values, lambda i: f"input {name!r} row {i}")
    return values


def _checked_array(column: Column, values: np.ndarray) -> np.ndarray:
    """Binary data: NaN is a missing value (refused where required), infinity is refused."""
    if values.dtype.kind == "f":
        bad = np.isinf(values)
        if bad.any():
            row = int(np.argmax(bad))
            raise RequestError(422, f"input {column.name!r} row {row} is infinite", column.name)
        if column.required and np.isnan(values).any():
            row = int(np.argmax(np.isnan(values)))
            raise RequestError(
                422, f"input {column.name!r} row {row} may not be null (NaN)", column.name
            )
        return values.astype(np.float64, copy=False)
    if values.dtype == np.uint64 and len(values) and values.max() > INT64_MAX:
        row = int(np.argmax(values > INT64_MAX))
        raise RequestError(
            422, f"input {column.name!r} row {row} is out of the 64-bit integer range", column.name
        )
    return values


def _one_tensor(tensor: _Tensor, columns: Sequence[Column]) -> dict:
    """One numeric tensor `[n, k]` in signature order, split into columns."""
    other = [c.name for c in columns if c.kind not in ("number", "integer")]
    if other:
        raise RequestError(
            422,
            f"input {tensor.name!r} is no feature, and one tensor takes only numbers: the "
            f"model has non-numeric columns ({', '.join(other[:3])}); send one "
            "input per feature",
            tensor.name,
        )
    width = len(columns)
    if len(tensor.shape) != 2 or tensor.shape[1] != width:
        raise RequestError(
            422,
            f"input {tensor.name!r}: shape {tensor.shape}, expected [n, {width}] (one column "
            "per feature, in the signature's order)",
            tensor.name,
        )
    if tensor.shape[0] == 0:
        raise RequestError(422, "empty batch: send at least one row")
    if tensor.datatype not in ACCEPTED["number"]:
        raise RequestError(
            422, f"input {tensor.name!r}: datatype {tensor.datatype} is not numeric", tensor.name
        )
    values = tensor.values
    if not isinstance(values, np.ndarray):
        kind = "integer" if tensor.datatype in INTEGERS else "number"
        check_values(
            Column(tensor.name, kind, True), values, lambda i: f"input {tensor.name!r} value {i}"
        )
        values = np.asarray(values, dtype=np.float64)
    matrix = values.reshape(tensor.shape)
    table = {}
    for j, column in enumerate(columns):
        values = _checked_array(column, matrix[:, j].astype(np.float64))
        if column.kind == "integer" and not np.array_equal(values, np.round(values)):
            row = int(np.argmax(values != np.round(values)))
            raise RequestError(
                422,
                f"input {tensor.name!r} row {row}: {column.name!r} must be a whole number",
                column.name,
            )
        table[column.name] = values
    return table

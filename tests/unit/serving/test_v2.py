"""The Open Inference Protocol's request parsing: every form of input it allows (per feature or
one tensor, JSON flat or nested, the binary extension) gives the columns the JSON records give,
and each malformed request is refused naming its input and row."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from maestro.serving import v2
from maestro.serving.records import Column, RequestError, to_columns

COLUMNS = [
    Column("age", "integer", True),
    Column("income", "number", False),
    Column("region", "string", True),
]
RECORDS = [
    {"age": 31, "income": 1500.5, "region": "north"},
    {"age": 47, "income": None, "region": "south"},
]
NUMERIC = [Column("age", "integer", True), Column("income", "number", True)]


def json_request(inputs: list[dict], **extra) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


def binary_request(tensors: list[tuple[str, str, list[int], bytes]]) -> tuple[bytes, str]:
    """The binary tensor extension: a JSON header, then each input's bytes in order."""
    inputs = [
        {"name": n, "datatype": d, "shape": s, "parameters": {"binary_data_size": len(b)}}
        for n, d, s, b in tensors
    ]
    header = json.dumps({"inputs": inputs}).encode()
    return header + b"".join(b for *_, b in tensors), str(len(header))


def byte_strings(values: list[str]) -> bytes:
    return b"".join(struct.pack("<I", len(v.encode())) + v.encode() for v in values)


def parse(raw: bytes, header: str | None = None, columns=COLUMNS, max_rows: int = 100):
    table, _ = v2.infer_request(raw, header, columns, max_rows)
    return {name: [None if v != v else v for v in list(values)] for name, values in table.items()}


def test_every_input_form_gives_the_columns_the_records_give():
    expected = to_columns(RECORDS, COLUMNS)
    flat = [
        {"name": "age", "datatype": "INT64", "shape": [2], "data": [31, 47]},
        {"name": "income", "datatype": "FP64", "shape": [2], "data": [1500.5, None]},
        {"name": "region", "datatype": "BYTES", "shape": [2], "data": ["north", "south"]},
    ]
    assert parse(json_request(flat)) == expected
    nested = [{**i, "shape": [2, 1], "data": [[v] for v in i["data"]]} for i in flat]
    assert parse(json_request(nested[::-1])) == expected  # any order, nested row-major
    raw, header = binary_request(
        [
            ("age", "INT32", [2], np.array([31, 47], "<i4").tobytes()),
            ("income", "FP64", [2, 1], np.array([1500.5, np.nan]).tobytes()),  # NaN: missing
            ("region", "BYTES", [2], byte_strings(["north", "south"])),
        ]
    )
    assert parse(raw, header) == expected


def test_one_numeric_tensor_is_split_in_signature_order():
    tensor = {"name": "input-0", "datatype": "FP32", "shape": [2, 2], "data": [31, 1.5, 47, 2]}
    assert parse(json_request([tensor]), columns=NUMERIC) == {
        "age": [31.0, 47.0],
        "income": [1.5, 2.0],
    }
    raw, header = binary_request(
        [("input-0", "FP64", [2, 2], np.array([[31, 1.5], [47, 2]]).tobytes())]
    )
    assert parse(raw, header, columns=NUMERIC) == {"age": [31.0, 47.0], "income": [1.5, 2.0]}


def test_the_answer_is_one_fp64_output_with_the_id_to_send_feedback_on():
    answer = json.loads(v2.infer_response("demo", "3", "abc", "client-1", np.array([0.25, 1.0])))
    assert answer == {
        "model_name": "demo",
        "model_version": "3",
        "id": "client-1",
        "parameters": {"request_id": "abc"},
        "outputs": [{"name": "predictions", "datatype": "FP64", "shape": [2], "data": [0.25, 1.0]}],
    }


AGE = {"name": "age", "datatype": "INT64", "shape": [1], "data": [31]}
INCOME = {"name": "income", "datatype": "FP64", "shape": [1], "data": [1.5]}
REGION = {"name": "region", "datatype": "BYTES", "shape": [1], "data": ["north"]}


@pytest.mark.parametrize(
    ("body", "columns", "status", "message"),
    [
        (b'{"inputs": [', COLUMNS, 400, "not valid JSON"),
        (b'{"inputs": []}', COLUMNS, 422, "an object with inputs"),
        (json_request([AGE, INCOME]), COLUMNS, 422, "missing input 'region'"),
        (
            json_request([AGE, INCOME, REGION, {**AGE, "name": "x"}]),
            COLUMNS,
            422,
            "unknown input 'x'",
        ),
        (json_request([AGE, AGE, INCOME, REGION]), COLUMNS, 422, "input 'age' is given twice"),
        (
            json_request([{**AGE, "datatype": "FP64"}, INCOME, REGION]),
            COLUMNS,
            422,
            "input 'age': datatype FP64 does not fit its type integer",
        ),
        (
            json_request([{**AGE, "data": [31.5]}, INCOME, REGION]),
            COLUMNS,
            422,
            "input 'age' row 0 must be an integer, got float",
        ),
        (
            json_request([{**AGE, "data": [None]}, INCOME, REGION]),
            COLUMNS,
            422,
            "input 'age' row 0 may not be null",
        ),
        (
            json_request([{**AGE, "shape": [2]}, INCOME, REGION]),
            COLUMNS,
            422,
            "input 'age': 1 values, its shape holds 2",
        ),
        (
            json_request([{**AGE, "shape": [1, 2], "data": [31, 32]}, INCOME, REGION]),
            COLUMNS,
            422,
            "input 'age': shape [1, 2], expected [n]",
        ),
        (
            json_request([{**AGE, "shape": [2], "data": [31, 32]}, INCOME, REGION]),
            COLUMNS,
            422,
            "different numbers of rows",
        ),
        (
            json_request([AGE, INCOME, {**REGION, "datatype": "STRING"}]),
            COLUMNS,
            422,
            "unknown datatype 'STRING'",
        ),
        (
            json_request([AGE, INCOME, REGION], outputs=[{"name": "proba"}]),
            COLUMNS,
            422,
            "unknown output 'proba'",
        ),
        (
            json_request([{"name": "t", "datatype": "FP64", "shape": [1, 2], "data": [31.5, 2]}]),
            NUMERIC,
            422,
            "input 't' row 0: 'age' must be a whole number",
        ),
        (
            json_request([{"name": "t", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]),
            NUMERIC,
            422,
            "shape [1, 3], expected [n, 2]",
        ),
        (
            json_request([{"name": "t", "datatype": "FP64", "shape": [1, 3], "data": [1, 2, 3]}]),
            COLUMNS,
            422,
            "one tensor takes only numbers",
        ),
        (
            json_request(
                [
                    {**AGE, "shape": [101], "data": [31] * 101},
                    {**INCOME, "shape": [101], "data": [1.0] * 101},
                    {**REGION, "shape": [101], "data": ["a"] * 101},
                ]
            ),
            COLUMNS,
            413,
            "batch of 101 rows is over the limit of 100",
        ),
    ],
)
def test_a_malformed_request_is_refused_naming_its_input(body, columns, status, message):
    with pytest.raises(RequestError) as refused:
        v2.infer_request(body, None, columns, 100)
    assert refused.value.status == status and message in refused.value.message


@pytest.mark.parametrize(
    ("tensors", "status", "message"),
    [
        (
            [("age", "INT64", [1], np.array([1, 2], "<i8").tobytes())],
            400,
            "input 'age': 16 bytes of binary data for 1 INT64 values",
        ),
        (
            [("income", "FP64", [1], np.array([np.inf]).tobytes())],
            422,
            "input 'income' row 0 is infinite",
        ),
        ([("region", "BYTES", [1], b"\x05\x00\x00\x00ab")], 400, "truncated BYTES element"),
        ([("region", "BYTES", [1], byte_strings(["a", "b"]))], 422, "input 'region': 2 values"),
        ([("region", "BYTES", [1], b"\x02\x00\x00\x00\xff\xfe")], 422, "not UTF-8 text"),
    ],
)
def test_malformed_binary_data_is_refused(tensors, status, message):
    good = {
        "age": ("age", "INT64", [1], np.array([31], "<i8").tobytes()),
        "income": ("income", "FP64", [1], np.array([1.5]).tobytes()),
        "region": ("region", "BYTES", [1], byte_strings(["north"])),
    }
    good |= {t[0]: t for t in tensors}
    raw, header = binary_request(list(good.values()))
    with pytest.raises(RequestError) as refused:
        v2.infer_request(raw, header, COLUMNS, 100)
    assert refused.value.status == status and message in refused.value.message


def test_a_header_length_that_does_not_fit_the_body_is_refused():
    raw, _ = binary_request([("age", "INT64", [1], np.array([31], "<i8").tobytes())])
    with pytest.raises(RequestError, match="does not fit the body"):
        v2.infer_request(raw, str(len(raw) + 1), COLUMNS, 100)

"""Serving plans and request validation: the rules the model server applies, without a server."""

from __future__ import annotations

import pytest

from maestro.deploy.strategies import canary_error_rate
from maestro.deploy.target import Check, version_check
from maestro.serving.plan import (
    ModelPlan,
    Plan,
    PlanError,
    Route,
    parse_plan,
    read_plan,
    write_plan,
)
from maestro.serving.records import Column, RequestError, to_columns

COLUMNS = [
    Column("age", "integer", True),
    Column("income", "number", False),
    Column("region", "string", True),
]


def test_a_plan_round_trips_through_its_file_with_the_same_digest(tmp_path):
    plan = Plan({"demo": ModelPlan((Route("3", 90), Route("4", 10)), shadow="5")})
    write_plan(tmp_path / "plan.json", plan)
    again = read_plan(tmp_path / "plan.json")
    assert again == plan and again.digest() == plan.digest()
    assert (
        Plan({"demo": ModelPlan((Route(3, 100),))}).digest()
        == Plan({"demo": ModelPlan((Route("3", 100.0),))}).digest()
    )
    assert read_plan(tmp_path / "absent.json") == Plan()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"demo": {}}, "a plan is an object with a 'models' object"),
        (
            {"models": {"demo": {"routes": []}}},
            "models.demo.routes: at least one route needs a weight above 0",
        ),
        (
            {"models": {"demo": {"routes": [{"ref": "3", "weight": -1}]}}},
            "models.demo.routes[0].weight: must be a number from 0 to 1e+06",
        ),
        # each of these was accepted, and then every request was a 500
        *(
            (
                {"models": {"demo": {"routes": [{"ref": "3", "weight": w}, {"ref": "4"}]}}},
                "models.demo.routes[0].weight: must be a number from 0 to 1e+06",
            )
            for w in (1e308, float("inf"), float("nan"))
        ),
        ({"models": {"demo": {"routes": [{"ref": "3"}, {"ref": "3"}]}}}, "a version appears twice"),
        ({"models": {"demo": {"routes": [{"version": "3"}]}}}, "models.demo.routes[0]: a route is"),
        (
            {"models": {"demo": {"routes": [{"ref": "3"}], "mirror": "4"}}},
            "models.demo: unknown field 'mirror'",
        ),
    ],
)
def test_a_bad_plan_names_the_file_and_field(raw, message):
    with pytest.raises(PlanError) as error:
        parse_plan(raw, "plan.json")
    assert str(error.value).startswith("plan.json: ") and message in str(error.value)


def test_records_become_columns_and_nullable_columns_take_null():
    table = to_columns(
        [{"age": 30, "income": None, "region": "north"}, {"age": 41, "income": 5.5, "region": "x"}],
        COLUMNS,
    )
    assert table == {"age": [30, 41], "income": [None, 5.5], "region": ["north", "x"]}


@pytest.mark.parametrize(
    ("records", "message", "field"),
    [
        ([{"age": 30, "region": "n"}], "record 0: missing field 'income'", "income"),
        (
            [{"age": 30, "income": 1.0, "region": "n", "zip": 1}],
            "record 0: unknown field 'zip'",
            "zip",
        ),
        (
            [{"age": 30, "income": 1.0, "region": "n"}, {"age": 3.5, "income": 1.0, "region": "n"}],
            "record 1: field 'age' must be an integer, got float 3.5",
            "age",
        ),
        (
            [{"age": True, "income": 1.0, "region": "n"}],
            "field 'age' must be an integer, got bool",
            "age",
        ),
        (
            [{"age": 30, "income": "1.0", "region": "n"}],
            "field 'income' must be a number, got str",
            "income",
        ),
        ([{"age": 30, "income": 1.0, "region": None}], "field 'region' may not be null", "region"),
        (
            [{"age": 30, "income": float("inf"), "region": "n"}],
            "field 'income' is infinite",
            "income",
        ),
        (["age"], "record 0 is a str, not an object", None),
    ],
)
def test_a_bad_record_is_refused_with_its_index_and_field(records, message, field):
    with pytest.raises(RequestError) as error:
        to_columns(records, COLUMNS)
    assert (
        error.value.status == 422 and message in error.value.message and error.value.field == field
    )


def test_the_canary_check_reads_requests_errors_and_p99_of_one_version():
    def reading(ok: int, failed: int, fast: int, slow: int) -> dict:
        labels = (("model", "demo"), ("version", "4"))
        samples = {
            ("maestro_requests_total", (("code", "200"), *labels)): ok,
            ("maestro_requests_total", (("code", "500"), *labels)): failed,
        }
        for le, count in (("0.005", fast), ("0.1", fast + slow), ("+Inf", fast + slow)):
            samples[
                ("maestro_request_latency_seconds_bucket", tuple(sorted((("le", le), *labels))))
            ] = count
        return samples

    check = version_check(reading(100, 0, 100, 0), reading(300, 3, 290, 10), "demo", "4")
    assert (check.requests, check.errors) == (203, 3)
    assert check.error_rate == pytest.approx(3 / 203)
    assert check.p99_ms == 100.0  # 10 of 200 new observations were above 5 ms
    assert version_check(reading(1, 0, 1, 0), reading(1, 0, 1, 0), "demo", "4").p99_ms is None


def test_a_canary_answers_for_refusals_beyond_the_stable_versions():
    stable = Check(requests=900, errors=0, p99_ms=3.0, refused=9)  # clients' bad requests: 1%
    assert canary_error_rate(Check(100, 0, 3.0, refused=1), stable) == 0.0
    assert canary_error_rate(Check(100, 1, 3.0, refused=1), stable) == pytest.approx(0.01)
    assert canary_error_rate(Check(100, 0, 3.0, refused=30), stable) == pytest.approx(0.29)

"""Every benchmark in `bench/` still finishes and still prints the figures the README quotes:
each runs in its smoke mode (tiny sizes), as a user would run it, in a fresh process."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.support import PROJECT, needs_shared_data, needs_torch, redis_databases

pytestmark = pytest.mark.slow
NUMBER = r"[\d,]+(?:\.\d+)?"


def run_benchmark(script: str, timeout: float) -> str:
    """`python bench/<script> --smoke` with none of the test session's platform settings."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("AIRFLOW", "MAESTRO_", "MLFLOW_"))
    }
    done = subprocess.run(
        [sys.executable, str(PROJECT / "bench" / script), "--smoke"],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{script} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def assert_row(output: str, label: str, figures: int) -> list[str]:
    """A line that starts with `label` and carries at least `figures` numbers; the numbers."""
    for line in output.splitlines():
        if line.startswith(label):
            found = re.findall(NUMBER, line[len(label) :])
            if len(found) >= figures:
                return found
    raise AssertionError(f"no line {label!r} with {figures} figures in:\n{output[-3000:]}")


def test_parse_time_reports_every_dag_file():
    output = run_benchmark("parse_time.py", timeout=300)
    for path in sorted((PROJECT / "dags").glob("*.py")):
        assert_row(output, path.name, 4)  # DAGs, Airflow import, parse median, parse max


def test_online_features_compares_entity_and_full_record_requests():
    with redis_databases(1):  # Redis answers (or the test skips, or fails in CI)
        output = run_benchmark("online_features.py", timeout=600)
    for row in ("| entity, closed loop", "| full record @200/s", "| entity @200/s"):
        assert_row(output, row, 4)
    assert_row(output, "entity p99 at 200/s:", 2)


def test_training_overhead_runs_and_measures_the_whole_pipeline():
    output = run_benchmark("training_overhead.py", timeout=900)
    assert "dag.test()" in output
    for task in ("request_approval", "promote", "evaluation.verdict", "tune[1]"):
        assert_row(output, task, 1)  # seconds
    for figure in ("wall time", "tasks running", "overhead", "overhead share"):
        assert_row(output, figure, 1)


def test_tuning_speedup_reports_both_speedups():
    output = run_benchmark("tuning_speedup.py", timeout=600)
    assert "pruning (the spec's default)" in output and "no pruning (the same work)" in output
    assert_row(output, "one worker", 4)
    assert_row(output, "two workers", 4)
    assert_row(output, "speed-up", 2)
    assert_row(output, "throughput speed-up", 1)


def test_serving_reports_every_server_and_goal():
    needs_shared_data("adult.csv")
    output = run_benchmark("serving.py", timeout=600)
    for model in ("demo", "adult_income"):
        section = output.split(f"### {model}")[1].split("###")[0]
        for server in (
            "| maestro |",
            "| mlflow models serve |",
            "| bare FastAPI |",
            "| maestro @200/s |",
            "| maestro @200/s, log off |",
            "| maestro batch 1000 |",
            "| maestro V2 |",
            "| maestro V2 @200/s |",
            "| maestro V2 batch 1000 |",
            "| maestro @200/s, 2 workers |",
            "| wrk: maestro, 1 worker |",
            "| wrk: maestro, 2 workers |",
        ):
            assert_row(section, server, 4)
        summary = assert_row(section, "throughput vs mlflow models serve:", 4)
        assert float(summary[0]) > 1, f"{model}: maestro no faster than mlflow models serve"
        for quoted in ("vs bare FastAPI:", "batch rows/s:", "p99 at 200/s with log / without:"):
            assert quoted in section
        assert_row(section, "workers 2 / 1 (wrk, single rows):", 5)
        assert "vs MLServer:" in section
        for step in ("| JSON records: parse and validate |", "| V2 binary: parse and validate |"):
            assert_row(section, step, 1)
        assert_row(section, "| model, booster (one thread) |", 1)
        assert_row(section, "| model, compiled forest (one thread) |", 1)
    for sink in ("parquet", "PostgreSQL"):  # rows answered against rows written
        section = output.split(f"### prediction log, {sink}")[1].split("###")[0]
        for load in ("| single rows |", "| 1,000-row batches |"):
            assert_row(section, load, 7)


def test_any_model_serves_a_multiclass_and_a_pyfunc_model_beside_mlflow():
    needs_shared_data("covtype.csv")
    needs_torch()
    output = run_benchmark("any_model.py", timeout=600)
    for model in ("forest_cover", "churn_mlp"):
        section = output.split(f"| {model} |")[1].split("\n\n")[0]
        for server in ("maestro", "maestro V2", "mlflow models serve"):
            for size in ("single", "batch"):
                found = assert_row(section, f"| {server}, {size} |", 5)
                assert found[-1] == "0", f"{model}: {server} answered errors: {section}"
            assert_row(section, "| maestro @200/s |", 4)
        assert_row(section, "goal: p99 at most 10 ms at 200 requests/s (maestro V2):", 1)


def test_drift_compares_both_engines_and_reads_the_prediction_log():
    output = run_benchmark("drift.py", timeout=600)
    for size in ("2,000", "20,000"):
        assert_row(output, f"{size:>10} maestro", 2)  # seconds, peak RSS
        assert_row(output, f"{size:>10} evidently", 2)
        assert f"{size} rows: maestro" in output
    assert "same verdicts per column: NO" not in output
    assert_row(output, "maestro growth from", 4)
    assert_row(output, "read a day, compacted", 2)
    assert_row(output, "read a day, one file per handover", 2)
    for how in ("columns", "whole"):  # the monitoring job's window, both ways
        label = f"{'60,000':>12} {how:<8}"
        assert_row(output, label, 2)
        line = next(line for line in output.splitlines() if line.startswith(label))
        assert line.endswith("n0, n1, c0"), line  # the shifted columns, and only they


def test_tracing_compares_the_server_with_tracing_off_and_on():
    output = run_benchmark("tracing.py", timeout=600)
    for row in ("| off |", "| on |", "| on, 10% sampled |"):
        assert_row(output, row, 4)
    assert_row(output, "on/off: requests/s", 2)


def test_scale_reports_time_and_memory_per_stage():
    output = run_benchmark("scale.py", timeout=900)
    for stage in ("ingest", "materialize_features", "tune", "evaluate", "verdict"):
        assert_row(output, f"| {stage} |", 2)  # seconds and MB
    assert_row(output, "total 3,000 rows:", 5)
    assert_row(output, "| SQLite (embedded) | batched |", 1)  # rows/s
    assert_row(output, "| Redis | feast |", 1)
    for source in ("local parquet", "S3 (moto, loopback)", "PostgreSQL (conn_id)"):
        assert_row(output, f"| {source} |", 3)  # seconds, MB, against the local file

"""How the training pipeline's time and memory grow with the data.

The demo spec at 100,000, 1,000,000 and 3,000,000 rows, end to end: ingest, validation, Feast
apply and materialization, the training set, tuning with a fixed small budget (4 trials, one
worker), the final fit, registration and the evaluation (gates, fairness, serving check, SHAP,
verdict). Each stage runs in a process of its own, as on an executor, so each gets its own wall
time and peak RSS (`wait4`'s `ru_maxrss`); handles pass between them as the DAG passes them.
Goals (issue 23): no stage above 4 GB peak RSS at 3M rows; time per row not growing from 1M to
3M; the evaluation at most 25% of the run at 1M rows; Feast materialization at least 50,000
rows/s.

Then Feast's materialization into the online store, written by the platform's batched writer
(`maestro.data.online_write`) and by Feast's own `materialize`, on the embedded SQLite store and
on Redis (127.0.0.1:6379; skipped, and said, when none answers): rows per second of the write
alone (`--materialize-rows`, default 100k and 1M; Feast's own at the first size only, at 8,000
rows/s a million rows would take two minutes a store).

Then where the data lives: the ingest of the same rows (`--source-rows`, default 1M) from a
local parquet file, from an S3 server on loopback (moto's, started here, through an Airflow
connection) and from PostgreSQL (a table in a database created here on 127.0.0.1:5432, through
an Airflow connection; skipped, and said, when none answers), each in its own process, with
what each costs against the local file.

    .venv/bin/python bench/scale.py [--rows 100000 1000000 3000000] [--trials 4]
                                    [--materialize-rows 100000 1000000]
                                    [--source-rows 1000000] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

PROJECT = Path(__file__).resolve().parents[1]
TRAINING = ["ingest", "validate_data", "materialize_features", "build_training_set"]
TRAINING += ["start_tuning", "tune", "finish_tuning", "train_final", "register"]
EVALUATION = ["evaluate", "validate_serving", "explain", "verdict"]

# one stage in a fresh process: the handle in, the handle out, as JSON files
STAGE = """
import sys
from maestro.config import get_settings
from maestro.governance import stages as governance
from maestro.handles import CandidateVersion, TrainingRun
from maestro.platform.airflow_env import apply_environment
from maestro.training import stages

name, given, wanted, trials = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
settings = get_settings()
apply_environment(settings)  # as a task has it: MLflow's URIs among the rest
text = open(given).read() if given != "-" else ""
if name == "ingest":
    out = stages.ingest("demo", stages.RunInfo("train_demo", "bench-scale"), settings)
elif name == "start_tuning":
    out = stages.start_tuning(TrainingRun.model_validate_json(text), settings, trials, 1)
elif name == "tune":
    out = TrainingRun.model_validate_json(text)
    stages.tune_worker(out, 0, settings)
elif name in ("evaluate", "validate_serving", "explain", "verdict"):
    out = getattr(governance, name)(CandidateVersion.model_validate_json(text), settings)
else:
    out = getattr(stages, name)(TrainingRun.model_validate_json(text), settings)
open(wanted, "w").write(out.model_dump_json())
"""


def scratch(rows: int, trials: int, source: dict | None = None) -> dict[str, str]:
    """A fresh state folder and the demo spec at `rows` rows (read from `source` when given),
    as an environment."""
    home = Path(tempfile.mkdtemp(prefix="maestro-scale-"))
    specs = home / "specs"
    specs.mkdir()
    for path in (PROJECT / "include" / "specs").glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        if raw["name"] == "demo":
            raw["source"] = source or raw["source"] | {"rows": rows}
            raw["trials"] = trials
            raw["workers"] = 1
            raw["governance"]["latency_budget_ms"] = 1000  # timing is not what is measured
        (specs / path.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "MAESTRO_", "MLFLOW_"))
    }
    return env | {"MAESTRO_HOME": str(home), "MAESTRO_SPECS_DIR": str(specs)}


def run_stage(name: str, given: str, wanted: str, trials: int, env: dict) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one stage in its own process."""
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", STAGE, name, given, wanted, str(trials)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    errors = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{name} failed:\n{errors[-3000:]}")
    return time.perf_counter() - started, usage.ru_maxrss / 1024


def pipeline(rows: int, trials: int) -> dict[str, tuple[float, float]]:
    env = scratch(rows, trials)
    folder = Path(env["MAESTRO_HOME"])
    figures: dict[str, tuple[float, float]] = {}
    given = "-"
    for name in TRAINING + EVALUATION:
        wanted = str(folder / f"{name}.json")
        figures[name] = run_stage(name, given, wanted, trials, env)
        given = wanted
        print(
            f"  {rows:>9,} rows  {name:<20} {figures[name][0]:7.1f} s  {figures[name][1]:7.0f} MB",
            flush=True,
        )
    return figures


REDIS = "redis://127.0.0.1:6379"
# one materialization in a fresh process: the demo's rows into a fresh online store
MATERIALIZE = """
import json, sys, time
import pandas as pd
from maestro.config import get_settings
from maestro.data import features, online_write, synthetic
from maestro.spec import get_spec
writer, rows = sys.argv[1], int(sys.argv[2])
settings = get_settings()
spec = get_spec("demo", settings)
frame = synthetic.generate(rows, seed=7)
store = features.feature_store(settings)
store.apply(features.load_definitions(spec, settings))
view = store.get_feature_view(spec.feature_view)
start, end = frame.event_timestamp.min(), frame.event_timestamp.max() + pd.Timedelta(seconds=1)
columns = {"customer_id": "int"} | {f.name: f.type for f in spec.features}
if writer == "feast":
    features.publish_snapshot(frame, spec, settings)
started = time.perf_counter()
if writer == "feast":
    store.materialize(start_date=start, end_date=end, feature_views=[view.name])
else:
    online_write.materialize(store, view, frame, columns, "customer_id", "event_timestamp", start, end)
print(json.dumps({"seconds": time.perf_counter() - started}))
"""


def materializations(sizes: list[int]) -> None:
    """Rows per second into SQLite and Redis, batched and by Feast's own materialize."""
    import redis

    stores: dict[str, str | None] = {"SQLite (embedded)": None}
    try:
        free = [n for n in range(1, 16) if not redis.Redis.from_url(f"{REDIS}/{n}").dbsize()]
    except redis.exceptions.ConnectionError as error:
        print(f"Redis skipped: none answers at 127.0.0.1:6379 ({error})")
        free = []
    if free:
        stores["Redis"] = f"{REDIS}/{free[-1]}"
    print(f"\n| online store | writer | {' | '.join(f'{r:,} rows' for r in sizes)} |")
    print(f"| --- | --- | {' | '.join('---' for _ in sizes)} |")
    for name, url in stores.items():
        for writer in ("batched", "feast"):
            cells = []
            for rows in sizes if writer == "batched" else sizes[:1]:
                env = scratch(rows, 1) | ({"MAESTRO_FEAST_ONLINE_STORE": url} if url else {})
                try:
                    done = subprocess.run(
                        [sys.executable, "-c", MATERIALIZE, writer, str(rows)],
                        env=env,
                        capture_output=True,
                        text=True,
                    )
                finally:
                    if url:
                        redis.Redis.from_url(url).flushdb()
                if done.returncode != 0:
                    raise SystemExit(f"materialize {writer} failed:\n{done.stderr[-3000:]}")
                seconds = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
                cells.append(f"{rows / seconds:,.0f} rows/s")
            cells += ["-"] * (len(sizes) - len(cells))
            print(f"| {name} | {writer} | {' | '.join(cells)} |")


def source_ingests(rows: int) -> None:
    """The ingest of `rows` demo rows from a local file, the S3 server and PostgreSQL."""
    import io
    import json as json_module
    import socket
    import uuid

    import boto3
    import sqlalchemy

    sys.path.insert(0, str(PROJECT / "include"))
    from maestro.data.synthetic import generate

    frame = generate(rows, seed=7)
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    moto = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    keys = {"aws_access_key_id": "bench", "aws_secret_access_key": "bench"}
    database = f"maestro_scale_{uuid.uuid4().hex[:8]}"
    server = sqlalchemy.create_engine(
        "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres", isolation_level="AUTOCOMMIT"
    )
    variants: dict[str, tuple[dict, dict]] = {}
    try:
        for _ in range(100):
            try:
                s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", **keys)
                s3.create_bucket(Bucket="lake")
                break
            except Exception:  # noqa: BLE001 - the server is still starting
                time.sleep(0.1)
        s3.put_object(Bucket="lake", Key="churn/all.parquet", Body=buffer.getvalue())
        lake = {
            "conn_type": "aws",
            "login": keys["aws_access_key_id"],
            "password": keys["aws_secret_access_key"],
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
        }
        variants["S3 (moto, loopback)"] = (
            {"format": "parquet", "path": "s3://lake/churn/all.parquet", "conn_id": "lake"},
            {"AIRFLOW_CONN_LAKE": json_module.dumps(lake)},
        )
        try:
            with server.connect() as conn:
                conn.execute(sqlalchemy.text(f'CREATE DATABASE "{database}"'))
        except sqlalchemy.exc.OperationalError as error:
            print(f"PostgreSQL skipped: no server at 127.0.0.1:5432 ({str(error).splitlines()[0]})")
        else:
            url = f"postgresql://postgres@127.0.0.1:5432/{database}"
            copy_into_postgres(frame, url)
            variants["PostgreSQL (conn_id)"] = (
                {"format": "sql", "conn_id": "warehouse", "query": "SELECT * FROM churn"},
                {"AIRFLOW_CONN_WAREHOUSE": url},
            )
        folder = Path(tempfile.mkdtemp(prefix="maestro-scale-sources-"))
        (folder / "churn.parquet").write_bytes(buffer.getvalue())
        local = {"format": "parquet", "path": str(folder / "churn.parquet")}
        variants = {"local parquet": (local, {"MAESTRO_DATA_ROOTS": str(folder)}), **variants}
        figures = {}
        for name, (source, extra) in variants.items():
            env = scratch(rows, 1, source) | extra
            home = Path(env["MAESTRO_HOME"])
            figures[name] = run_stage("ingest", "-", str(home / "ingest.json"), 1, env)
            done = json_module.loads((home / "ingest.json").read_text())
            assert done["data"]["rows"] == rows, (name, done["data"]["rows"])
        baseline = figures["local parquet"][0]
        print(f"\n| source ({rows:,} rows) | ingest | peak RSS | against the local file |")
        print("| --- | --- | --- | --- |")
        for name, (seconds, mb) in figures.items():
            print(f"| {name} | {seconds:.1f} s | {mb:,.0f} MB | {seconds / baseline:.2f}x |")
    finally:
        moto.terminate()
        if "PostgreSQL (conn_id)" in variants:
            with server.connect() as conn:
                conn.execute(sqlalchemy.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
        server.dispose()


def copy_into_postgres(frame: Any, url: str) -> None:
    """The rows as the table `churn`, by COPY."""
    import io

    import sqlalchemy

    engine = sqlalchemy.create_engine(url.replace("postgresql://", "postgresql+psycopg2://"))
    frame.head(0).to_sql("churn", engine, index=False)
    text = io.StringIO()
    frame.to_csv(text, index=False, header=False)
    text.seek(0)
    raw = engine.raw_connection()
    try:
        with raw.cursor() as cursor:
            cursor.copy_expert("COPY churn FROM STDIN WITH (FORMAT csv)", text)
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000, 3_000_000])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--materialize-rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--source-rows", type=int, default=1_000_000)
    parser.add_argument("--smoke", action="store_true", help="3,000 rows, 2 trials")
    args = parser.parse_args()
    sizes, trials = ([3_000], 2) if args.smoke else (args.rows, args.trials)
    source_rows = 3_000 if args.smoke else args.source_rows
    materialize_rows = [3_000] if args.smoke else args.materialize_rows
    results = {rows: pipeline(rows, trials) for rows in sizes}

    print(f"\n| stage | {' | '.join(f'{r:,} rows: s, MB' for r in sizes)} |")
    print(f"| --- | {' | '.join('---' for _ in sizes)} |")
    for name in TRAINING + EVALUATION:
        cells = [f"{results[r][name][0]:.1f} s, {results[r][name][1]:,.0f} MB" for r in sizes]
        print(f"| {name} | {' | '.join(cells)} |")
    print()
    for rows in sizes:
        stages = results[rows]
        total = sum(seconds for seconds, _ in stages.values())
        evaluation = sum(stages[name][0] for name in EVALUATION)
        peak = max(mb for _, mb in stages.values())
        materialize = rows / stages["materialize_features"][0]
        print(
            f"total {rows:,} rows: {total:.1f} s, {total / rows * 1e6:.1f} us/row, "
            f"evaluation {evaluation / total * 100:.1f}%, peak {peak:,.0f} MB, "
            f"materialize_features {materialize:,.0f} rows/s"
        )
    print(json.dumps({str(r): results[r] for r in sizes}))
    materializations(materialize_rows)
    source_ingests(source_rows)


if __name__ == "__main__":
    main()

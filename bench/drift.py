"""The monitoring job's drift computation against Evidently's data drift preset, side by side.

Tables of 20 columns (15 numeric, 5 categorical) at two sizes, the current one with three
columns shifted. Each engine runs in its own fresh process (wall time of the drift computation,
and the process's peak RSS, which includes reading the two parquet files): `maestro`
(`maestro.monitoring.drift.dataset_drift`, the whole window) and `evidently` (a `Report` with
`DataDriftPreset()` and its defaults). Then whether their per-column verdicts agree, and the
prediction log's read of a day: one million rows handed over a thousand rows at a time, read
back from the compacted day and from the same rows left as one file per handover. Last, the
monitoring job's read and drift of a logged window (`--window-rows`, default 1M and 10M rows
of the same 20 features, written by the server's log sink in handovers of 50,000 rows) against
a reference of 1M rows, each way in its own process: `columns` (the job: the window's
predictions, then each feature column by column, `maestro.monitoring.stages.WindowColumns`)
and `whole` (the window read into one DataFrame first, as the job did before); wall time and
peak RSS.

    .venv/bin/python bench/drift.py [--sizes 100000 1000000] [--window-rows 1000000 10000000]
                                    [--smoke]
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

import numpy as np
import pandas as pd

PROJECT = Path(__file__).resolve().parents[1]
NUMERIC = [f"n{i}" for i in range(15)]
CATEGORICAL = [f"c{i}" for i in range(5)]
SHIFTED = ["n0", "n1", "c0"]

ENGINE = """
import json, resource, sys, time
import pandas as pd
engine, reference, current = sys.argv[1:4]
numeric = [f"n{i}" for i in range(15)]
categorical = [f"c{i}" for i in range(5)]
ref, cur = pd.read_parquet(reference), pd.read_parquet(current)
if engine == "maestro":
    from maestro.monitoring.drift import dataset_drift
    from maestro.spec.sections import DriftSpec
    started = time.perf_counter()
    result = dataset_drift(ref, cur, numeric, categorical, DriftSpec())
    verdicts = {c.column: c.drifted for c in result.columns}
else:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset
    started = time.perf_counter()
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    snapshot = Report([DataDriftPreset()]).run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )
    verdicts = {}
    for metric in snapshot.dict()["metrics"]:
        config = metric["config"]
        if config["type"].endswith("ValueDrift"):
            value, limit, method = metric["value"], config["threshold"], config["method"]
            if "p_value" not in method:
                verdicts[config["column"]] = bool(value >= limit)
            else:
                verdicts[config["column"]] = bool(value <= limit if "K-S" in method else value < limit)
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_bytes": peak, "verdicts": verdicts}))
"""


def table(rows: int, seed: int, shift: bool) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    columns = {}
    for i, name in enumerate(NUMERIC):
        loc = 0.5 if shift and name in SHIFTED else 0.0
        columns[name] = rng.normal(loc + i, 1.0 + i / 10, rows)
    for name in CATEGORICAL:
        p = [0.2, 0.3, 0.5] if shift and name in SHIFTED else [0.4, 0.35, 0.25]
        columns[name] = rng.choice(["a", "b", "c"], rows, p=p)
    return pd.DataFrame(columns)


def run_engine(engine: str, reference: Path, current: Path) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", ENGINE, engine, str(reference), str(current)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(PROJECT / "include")},
    )
    if done.returncode != 0:
        raise SystemExit(f"{engine} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(sizes: list[int], folder: Path) -> None:
    print(f"{'rows':>10} {'engine':<10} {'seconds':>9} {'peak RSS MB':>12}  drifted columns")
    results = {}
    for rows in sizes:
        reference, current = folder / f"ref-{rows}.parquet", folder / f"cur-{rows}.parquet"
        table(rows, 1, shift=False).to_parquet(reference)
        table(rows, 2, shift=True).to_parquet(current)
        for engine in ("maestro", "evidently"):
            found = run_engine(engine, reference, current)
            results[(rows, engine)] = found
            drifted = sorted(c for c, d in found["verdicts"].items() if d)
            print(
                f"{rows:>10,} {engine:<10} {found['seconds']:>9.2f} "
                f"{found['peak_bytes'] / 2**20:>12,.0f}  {', '.join(drifted)}"
            )
    print()
    for rows in sizes:
        ours, theirs = results[(rows, "maestro")], results[(rows, "evidently")]
        same = ours["verdicts"] == theirs["verdicts"]
        print(
            f"{rows:>10,} rows: maestro {theirs['seconds'] / ours['seconds']:.1f}x faster, "
            f"{ours['peak_bytes'] / theirs['peak_bytes']:.2f} of the memory; "
            f"same verdicts per column: {'yes' if same else 'NO'}"
        )
    if len(sizes) > 1:
        small, large = sizes[0], sizes[-1]
        growth = results[(large, "maestro")]["seconds"] / results[(small, "maestro")]["seconds"]
        print(
            f"maestro growth from {small:,} to {large:,} rows: {growth:.1f}x for {large / small:.0f}x rows"
        )


def log_read(rows: int, handover: int, folder: Path) -> None:
    """A day of the prediction log: `rows` rows in handovers of `handover` rows."""
    import pyarrow.parquet as pq

    from maestro.files import atomic_write
    from maestro.logs import predictions
    from maestro.logs.parquet import ParquetStore

    features = {f"f{i}": np.random.default_rng(i).normal(size=handover) for i in range(9)}
    records = pd.DataFrame(features).to_dict("records")
    compacted, loose = (
        predictions.ParquetSink(ParquetStore(folder / "compacted", predictions.TABLE)),
        folder / "loose",
    )
    day = pd.Timestamp.now(tz="UTC").floor("D") + pd.Timedelta(hours=1)
    started = time.perf_counter()
    for n in range(rows // handover):
        at = (day + pd.Timedelta(seconds=n)).timestamp()
        entry = predictions.Entry(
            at,
            f"r{n}",
            "m",
            "1",
            "primary",
            1.0,
            tuple(features),
            json.dumps(records).encode(),
            np.zeros(handover).tobytes(),
        )
        part = predictions.arrow_table(predictions.rows_of([entry]))
        compacted.write("m", part)
        target = loose / "model=m" / f"date={day:%Y-%m-%d}" / f"l0-{n:08d}.parquet"
        atomic_write(target, lambda tmp, part=part: pq.write_table(part, tmp))
    written = time.perf_counter() - started
    files = len(list((folder / "compacted" / "model=m").glob("date=*/l*.parquet")))
    print(
        f"prediction log: {rows:,} rows in {rows // handover:,} handovers written in {written:.1f}s"
    )
    for name, root, count in (
        ("compacted", folder / "compacted", files),
        ("one file per handover", loose, rows // handover),
    ):
        started = time.perf_counter()
        frame = predictions.read_log(str(root), "m", day.floor("D").to_pydatetime(), None)
        seconds = time.perf_counter() - started
        assert len(frame) == rows, (name, len(frame))
        print(f"read a day, {name:<22} {count:>6,} files {seconds:>7.2f}s")


# the monitoring job's read and drift of a logged window, one way per process
WINDOW = """
import datetime as dt, json, resource, sys, time
import pandas as pd
from maestro.config import get_settings
from maestro.logs import predictions
from maestro.monitoring import drift, stages
from maestro.spec import ModelSpec
how, spec_json, end = sys.argv[1], sys.argv[2], dt.datetime.fromisoformat(sys.argv[3])
spec, settings = ModelSpec.model_validate_json(spec_json), get_settings()
started = time.perf_counter()
reference = stages.reference_set(spec, settings, None)
numeric = [f.name for f in spec.features if f.type != "category"]
start, meta = stages.current_window(spec, settings, end)
if how == "columns":
    current = stages.WindowColumns(spec, settings, (start, end), meta)
else:
    whole = predictions.read_log(settings.prediction_log_location, spec.name, start, end, "primary")
    current = whole.rename(columns=lambda c: c.removeprefix("feature."))
found = drift.dataset_drift(reference, current, numeric, spec.categorical_features, spec.monitoring.drift)
if how == "columns":
    current.sample()
seconds = time.perf_counter() - started
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"seconds": seconds, "peak_bytes": peak, "rows": len(current), "drifted": found.drifted_columns}))
"""


def window_spec(reference: Path) -> str:
    """The demo spec with the bench's 20 features and `reference` as its reference set."""
    import yaml

    from maestro.spec import ModelSpec

    raw = yaml.safe_load((PROJECT / "include" / "specs" / "demo.yaml").read_text())
    raw["features"] = [{"name": n, "type": "float"} for n in NUMERIC] + [
        {"name": c, "type": "category", "allowed": ["a", "b", "c"]} for c in CATEGORICAL
    ]
    raw["protected_attributes"], raw["governance"]["slices"] = [], []
    raw["monitoring"]["reference"] = str(reference)
    raw["monitoring"]["window_hours"] = 24
    return ModelSpec.model_validate(raw).model_dump_json()


def write_window(rows: int, handover: int, root: Path, day: pd.Timestamp) -> None:
    """`rows` logged rows of model `demo` within `day`, as the server's sink writes them."""
    from maestro.logs import predictions
    from maestro.logs.parquet import ParquetStore

    sink = predictions.ParquetSink(ParquetStore(root, predictions.TABLE))
    for n, begin in enumerate(range(0, rows, handover)):
        size = min(handover, rows - begin)
        shifted = table(size, 100 + n, shift=True)
        at = day + pd.Timedelta(seconds=n)
        micros = np.full(size, int(at.timestamp() * 1e6), dtype="int64")
        meta = {
            "ts": micros,
            "request_id": np.array([f"r{n}-{i // 100}" for i in range(size)]),
            "model": np.full(size, "demo"),
            "version": np.full(size, "1"),
            "role": np.full(size, "primary"),
            "latency_ms": np.ones(size),
            "prediction": np.random.default_rng(n).random(size),
        }
        features = {c: shifted[c].tolist() for c in shifted.columns}
        sink.write("demo", predictions.arrow_table(predictions.Rows(meta, features)))


def monitoring_window(sizes: list[int], folder: Path) -> None:
    reference = folder / "reference.parquet"
    table(max(1_000_000 if sizes[-1] >= 1_000_000 else sizes[-1], 1), 1, False).to_parquet(
        reference
    )
    spec = window_spec(reference)
    day = pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=1)
    end = (day + pd.Timedelta(hours=23)).isoformat()
    print(f"{'window rows':>12} {'read':<8} {'seconds':>8} {'peak RSS MB':>12}  drifted columns")
    for rows in sizes:
        root = folder / f"log-{rows}"
        started = time.perf_counter()
        write_window(rows, 50_000, root, day + pd.Timedelta(hours=1))
        print(f"  ({rows:,} rows logged in {time.perf_counter() - started:.0f} s)")
        for how in ("columns", "whole"):
            env = {**os.environ, "PYTHONPATH": str(PROJECT / "include")}
            env |= {"MAESTRO_HOME": str(folder / "home"), "MAESTRO_PREDICTION_LOG": str(root)}
            done = subprocess.run(
                [sys.executable, "-c", WINDOW, how, spec, end],
                capture_output=True,
                text=True,
                env=env,
            )
            if done.returncode != 0:
                print(f"{rows:>12,} {how:<8} failed: {done.stderr.strip().splitlines()[-1]}")
                continue
            found = json.loads(done.stdout.strip().splitlines()[-1])
            assert found["rows"] == rows, found
            print(
                f"{rows:>12,} {how:<8} {found['seconds']:>8.1f} "
                f"{found['peak_bytes'] / 2**20:>12,.0f}  {', '.join(found['drifted'])}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--log-rows", type=int, default=1_000_000)
    parser.add_argument("--window-rows", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: does it still run")
    args = parser.parse_args()
    sizes, log_rows = ([2_000, 20_000], 20_000) if args.smoke else (args.sizes, args.log_rows)
    window_rows = [60_000] if args.smoke else args.window_rows
    sys.path.insert(0, str(PROJECT / "include"))
    with tempfile.TemporaryDirectory(prefix="maestro-drift-") as tmp:
        compare(sizes, Path(tmp))
        print()
        log_read(log_rows, 1000, Path(tmp))
        print()
        monitoring_window(window_rows, Path(tmp))


if __name__ == "__main__":
    main()

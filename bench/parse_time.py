"""Parse time of every DAG file in a fresh process, beyond importing Airflow itself.

Each sample is a new interpreter that imports Airflow's authoring API (the baseline), then
parses one DAG file with Airflow's DagBag, as `airflow dags report` measures it. Goal: at most
0.3 s per file beyond the Airflow import.

    .venv/bin/python bench/parse_time.py [--repeat 7] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import statistics

from _setup import PROJECT, run, scratch_platform

SAMPLE = """
import json, sys, time
t0 = time.perf_counter()
import airflow.sdk
from airflow.dag_processing.dagbag import DagBag
t1 = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
t2 = time.perf_counter()
stats = [{"file": s.file, "duration": s.duration.total_seconds(), "dags": s.dag_num} for s in bag.dagbag_stats]
print(json.dumps({"airflow_import": t1 - t0, "parse": t2 - t1, "errors": len(bag.import_errors), "stats": stats}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="one sample per file: a check")
    args = parser.parse_args()
    if args.smoke:
        args.repeat = 1
    scratch_platform(demo_rows=20_000, trials=10)
    print(
        f"{'DAG file':<28}{'DAGs':>5}{'Airflow import':>16}{'parse (median)':>16}{'parse (max)':>13}"
    )
    for path in sorted((PROJECT / "dags").glob("*.py")):
        samples = [
            json.loads(run(SAMPLE, str(path)).strip().splitlines()[-1]) for _ in range(args.repeat)
        ]
        assert all(s["errors"] == 0 for s in samples), f"{path.name} has import errors"
        parse = [s["parse"] for s in samples]
        base = statistics.median(s["airflow_import"] for s in samples)
        print(
            f"{path.name:<28}{samples[0]['stats'][0]['dags']:>5}{base:>15.3f}s"
            f"{statistics.median(parse):>15.3f}s{max(parse):>12.3f}s"
        )


if __name__ == "__main__":
    main()

"""Wall time of the `demo` training DAG and its orchestration overhead.

Runs `train_demo` once with `dag.test()` (as `maestro demo` does) on a demo of 50,000 rows
with 20 trials, then reads every task instance's duration from Airflow's metadata database.
Overhead = wall time - sum of task durations. Goal: overhead at most 15% of wall time.

    .venv/bin/python bench/training_overhead.py [--rows 50000] [--trials 20]
"""

from __future__ import annotations

import argparse
import time

from _setup import scratch_platform


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    scratch_platform(demo_rows=args.rows, trials=args.trials)

    from maestro.airflow_env import load_dag
    from maestro.config import get_settings

    dag = load_dag("train_demo", get_settings())
    started = time.perf_counter()
    run = dag.test(run_conf={"trials": args.trials, "workers": 2})
    wall = time.perf_counter() - started
    assert str(run.state) == "success", run.state
    tasks = sorted(run.get_task_instances(), key=lambda t: t.start_date)
    compute = sum(t.duration or 0.0 for t in tasks)
    print(f"\ntrain_demo: {args.rows} rows, {args.trials} trials")
    for t in tasks:
        label = t.task_id if t.map_index < 0 else f"{t.task_id}[{t.map_index}]"
        print(f"  {label:<24}{t.duration:>8.2f}s")
    print(f"wall time            {wall:8.2f}s")
    print(f"sum of task compute  {compute:8.2f}s")
    print(
        f"overhead             {wall - compute:8.2f}s ({100 * (wall - compute) / wall:.1f}% of wall time)"
    )


if __name__ == "__main__":
    main()

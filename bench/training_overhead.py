"""Wall time of a training DAG and its orchestration overhead.

Trains `demo` (built-in families; or `--model churn_mlp`, the PyTorch trainer of
include/trainers/, a spec's own training code) on 50,000 rows, 20 trials, two tuning workers,
twice (three times) on one scratch state folder,
the whole pipeline through evaluation, approval and promotion:
- `dag.test()`: the run in one process, watched as `maestro demo` watches it;
- platform: `maestro up` (api-server, scheduler, dag-processor, triggerer, LocalExecutor), the
  run triggered through the REST API, each task in its own process as in production;
- celery: the same with the CeleryExecutor, two workers of two slots on the Redis broker
  (MAESTRO_CELERY_BROKER, default redis://127.0.0.1:6379/0) and Airflow's metadata in a scratch
  PostgreSQL database (MAESTRO_BENCH_POSTGRES, default postgresql://postgres@127.0.0.1:5432);
  the other stores as the LocalExecutor run has them.
Both times the approval is answered by tag as soon as it is asked, the way `maestro demo`
answers it; the triggers look for a decision every second (MAESTRO_APPROVAL_POLL_SECONDS).
Overhead = wall time (queued to finished) - the time during which at least one task was
running (waiting for the approver counts as running), i.e. the time spent on nothing but
orchestration. Goal: at most 15% of wall time.

    .venv/bin/python bench/training_overhead.py [--model demo] [--rows 50000] [--trials 20] [--smoke]

The celery run needs the PostgreSQL and Redis servers; `--smoke` runs `dag.test()` alone.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from _setup import scratch_platform


def busy_seconds(intervals: list[tuple[datetime, datetime]]) -> float:
    """Length of the union of the intervals (parallel tasks count once)."""
    total, reach = 0.0, None
    for start, end in sorted(intervals):
        if reach is None or start > reach:
            total += (end - start).total_seconds()
            reach = end
        elif end > reach:
            total += (end - reach).total_seconds()
            reach = end
    return total


def with_dag_test(
    model: str, conf: dict, home: Path
) -> tuple[float, list[tuple[str, datetime, datetime]]]:
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    from maestro.config import get_settings
    from maestro.platform.airflow_env import task_label, watch_dag_test
    from maestro.platform.runs import approval_hint

    settings = get_settings()
    approve = approval_hint(model, settings, approve_as="admin")
    dag = f"train_{model}"
    done = watch_dag_test(dag, settings, conf, home / "dag-test.log", _quiet, approve)
    with create_session() as session:
        run = session.query(DagRun).filter_by(dag_id=dag, run_id=done.run_id).one()
        instances = run.get_task_instances(session=session)
        _check_finished(
            dag, str(run.state), {task_label(t.task_id, t.map_index): t.state for t in instances}
        )
        tasks = [
            (task_label(t.task_id, t.map_index), t.start_date, t.end_date)
            for t in instances
            if t.start_date  # skipped tasks never started
        ]
        began = run.queued_at or run.start_date  # dag.test() does not queue its run
        return (run.end_date - began).total_seconds(), tasks


def with_platform(
    model: str, conf: dict, home: Path, settings: dict[str, str] | None = None
) -> tuple[float, list[tuple[str, datetime, datetime]]]:
    from maestro.config import get_settings
    from maestro.platform.airflow_api import AirflowClient
    from maestro.platform.airflow_env import task_label
    from maestro.platform.credentials import admin_password
    from maestro.platform.runs import approval_hint
    from maestro.platform.services import Ports, health_urls, up_command
    from maestro.web import answers, free_port

    ports = Ports(*(free_port() for _ in range(5)))
    env = {
        **os.environ,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        **(settings or {}),
    }
    with (home / "up.log").open("w") as log:
        platform = subprocess.Popen(
            up_command(ports), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        while not all(answers(url) for url in health_urls(ports).values()):
            assert platform.poll() is None, f"maestro up failed: see {home / 'up.log'}"
            time.sleep(1)
        airflow = AirflowClient(f"http://127.0.0.1:{ports.airflow}", "admin", admin_password(home))
        dag = f"train_{model}"
        while dag not in airflow.dag_ids():
            time.sleep(1)
        airflow.unpause(dag)
        run_id = airflow.trigger(dag, conf)
        approve = approval_hint(model, get_settings(), approve_as="admin")
        run = airflow.wait(dag, run_id, timeout=1800, poll=0.5, on_state=approve)
        instances = airflow.task_instances(dag, run_id)
        states = {task_label(t["task_id"], t["map_index"]): t["state"] for t in instances}
        _check_finished(dag, run["state"], states)
        wall = (_time(run["end_date"]) - _time(run["queued_at"])).total_seconds()
        tasks = [
            (task_label(t["task_id"], t["map_index"]), _time(t["start_date"]), _time(t["end_date"]))
            for t in instances
            if t["start_date"]  # skipped tasks never started
        ]
        return wall, tasks
    finally:
        platform.terminate()
        platform.wait(timeout=120)


@contextmanager
def celery_settings():
    """The CeleryExecutor's settings, on a scratch PostgreSQL database dropped afterwards."""
    import uuid

    import psycopg2

    server = os.environ.get("MAESTRO_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432")
    name = f"maestro_bench_airflow_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(f"{server}/postgres")
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    try:
        url = f"{server}/{name}".replace("postgresql://", "postgresql+psycopg2://")
        yield {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": url,
            "MAESTRO_EXECUTOR": "celery",
            "MAESTRO_CELERY_WORKERS": "2",
            "MAESTRO_WORKER_CONCURRENCY": "2",
        }
    finally:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def _check_finished(dag: str, state: str, tasks: dict[str, str]) -> None:
    """The run must have gone the whole way: gates passed, approved, promoted."""
    if state != "success" or tasks.get("promote") != "success":
        raise SystemExit(f"{dag} did not reach promote: run {state}, tasks {tasks}")


def _quiet(line: str) -> None:
    if "approved" in line:
        print(line, flush=True)


def _time(value: str) -> datetime:
    return datetime.fromisoformat(value)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=("demo", "churn_mlp"), default="demo")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument(
        "--smoke", action="store_true", help="8,000 rows, 4 trials, dag.test() only: a check"
    )
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.trials = 8_000, 4
    os.environ["MAESTRO_APPROVAL_POLL_SECONDS"] = "1"
    # the serving check's latency gate judges the machine, not orchestration: a loaded
    # machine must not stop the run before approval
    home = scratch_platform(args.rows, args.trials, {"latency_budget_ms": 500}, args.model)
    conf = {"trials": args.trials, "workers": 2}
    results = {"dag.test()": with_dag_test(args.model, conf, home)}
    # the smoke check leaves the platforms (a run triggered through the REST API, each task in
    # its own process) to tests/integration/test_closed_loop.py and test_platform.py
    if not args.smoke:
        results["platform"] = with_platform(args.model, conf, home)
        with celery_settings() as celery:
            results["celery"] = with_platform(args.model, conf, home, celery)

    print(f"\ntrain_{args.model}: {args.rows} rows, {args.trials} trials, 2 tuning workers")
    labels = [label for label, _, _ in sorted(results["dag.test()"][1], key=lambda t: t[1])]
    print(f"{'task':<30}" + "".join(f"{mode:>14}" for mode in results))
    for label in labels:
        cells = []
        for _, tasks in results.values():
            start, end = next((s, e) for name, s, e in tasks if name == label)
            cells.append(f"{(end - start).total_seconds():>13.2f}s")
        print(f"{label:<30}" + "".join(cells))
    rows = {"wall time": [], "tasks running": [], "overhead": [], "overhead share": []}
    for wall, tasks in results.values():
        busy = busy_seconds([(s, e) for _, s, e in tasks])
        rows["wall time"].append(f"{wall:>13.2f}s")
        rows["tasks running"].append(f"{busy:>13.2f}s")
        rows["overhead"].append(f"{wall - busy:>13.2f}s")
        rows["overhead share"].append(f"{100 * (wall - busy) / wall:>13.1f}%")
    for name, cells in rows.items():
        print(f"{name:<30}" + "".join(cells))


if __name__ == "__main__":
    main()

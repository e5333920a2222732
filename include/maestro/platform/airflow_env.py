"""Running Airflow on the platform's settings: environment, metadata database, DAG runs.

Airflow reads its configuration when first imported, so `apply_environment` must run before
anything imports `airflow` in a process that drives it (the CLI, the tests, the benchmarks).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from maestro.config import Settings, export_environment
from maestro.files import atomic_write_text
from maestro.platform.processes import stop_group

log = logging.getLogger(__name__)


def apply_environment(settings: Settings) -> dict[str, str]:
    """Put the platform's environment into this process (and so into its children).

    `.env` in the project fills in what the environment does not set (e.g. AIRFLOW__ keys).
    """
    from dotenv import load_dotenv

    load_dotenv(settings.project_dir / ".env", override=False)
    env = export_environment(settings)
    os.environ.update(env)
    private_folder(settings.home)
    (settings.home / "airflow").mkdir(parents=True, exist_ok=True)
    for key, value in airflow_secrets(settings).items():
        env[key] = os.environ.setdefault(key, value)
    return env


def private_folder(path: Path) -> None:
    """The state folder, made (or made again) its owner's alone: it holds databases, keys and
    passwords, and a mode 700 folder keeps files made before this rule out of others' reach."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        path.chmod(0o700)
    except PermissionError:  # another owner's folder, e.g. a volume: its owner decides
        log.warning("%s: not ours to restrict to mode 700", path)


def airflow_secrets(settings: Settings) -> dict[str, str]:
    """Airflow's signing and encryption keys for this state folder, made once and kept there.

    Every component must share them (the scheduler's task tokens are checked by the
    api-server), and none may be committed: they live in `<home>/airflow/secrets.json`
    (mode 600) unless the environment or `.env` sets them.
    """
    import base64
    import json
    import secrets

    path = settings.home / "airflow" / "secrets.json"
    if not path.exists():
        keys = {
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__CORE__FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
        }
        # mode 600; of two processes racing, one set of keys wins
        atomic_write_text(path, json.dumps(keys), keep_existing=True)
    return json.loads(path.read_text())


def airflow_bin() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def migrate_metadata_db(settings: Settings, log: Path) -> None:
    """`airflow db migrate`: create or upgrade the metadata database (fast when current)."""
    apply_environment(settings)
    with log.open("a") as out:
        subprocess.run([airflow_bin(), "db", "migrate"], check=True, stdout=out, stderr=out)


def load_dag(dag_id: str, settings: Settings) -> Any:
    """Import the DAG files and return one DAG object by id."""
    from maestro.files import import_file

    for path in sorted((settings.project_dir / "dags").glob("*.py")):
        module = import_file(f"maestro_dags_{path.stem}", path)
        if dag_id in vars(module):
            return vars(module)[dag_id]
    raise KeyError(f"no DAG {dag_id!r} in {settings.project_dir / 'dags'}")


def run_dag_test(dag_id: str, settings: Settings, conf: dict | None = None) -> tuple[str, str]:
    """Run one DAG run in this process with `dag.test()`; return (state, run_id)."""
    dag = load_dag(dag_id, settings)
    run = dag.test(run_conf=conf or {})
    return str(run.state), run.run_id


def task_states(dag_id: str, since: float) -> tuple[str | None, list[tuple]]:
    """The newest run of `dag_id` started after `since`: its id and (task, map index, state,
    duration) rows in start order, read from the metadata database."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        run = (
            session.query(DagRun).filter(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).first()
        )
        if run is None or run.start_date is None or run.start_date.timestamp() < since - 5:
            return None, []
        rows = _task_instances(session, dag_id, run.run_id)
        return run.run_id, [(t.task_id, t.map_index, t.state, t.duration) for t in rows]


def _task_instances(session: Any, dag_id: str, run_id: str) -> list:
    """A run's task instances in start order (not started last)."""
    from airflow.models import TaskInstance

    rows = (
        session.query(TaskInstance)
        .filter(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id)
        .all()
    )
    return sorted(rows, key=lambda t: (t.start_date is None, t.start_date, t.map_index))


def latest_asset_event(name: str) -> dict | None:
    """The newest event of the asset `name` in Airflow's metadata database, as its extra."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        event = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.name == name)
            .order_by(AssetEvent.timestamp.desc())
            .first()
        )
        return dict(event.extra) if event else None


REPORTED_STATES = (
    "running",
    "success",
    "failed",
    "upstream_failed",
    "up_for_retry",
    "deferred",
    "skipped",
)
STOP_GRACE_SECONDS = 5.0  # SIGINT first (Python unwinds), SIGKILL after


class RunInterrupted(Exception):
    """The person watching a run stopped it (Ctrl-C or SIGTERM); the run was stopped and
    marked failed, and `unfinished` lists the task labels it left undone."""

    def __init__(self, signum: int, run_id: str | None, unfinished: list[str]) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum, self.run_id, self.unfinished = signum, run_id, unfinished

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class _Stop(Exception):
    def __init__(self, signum: int) -> None:
        self.signum = signum


@contextmanager
def _signals_raise_stop() -> Iterator[None]:
    """SIGINT and SIGTERM raise `_Stop` in this (main) thread while the block runs; after the
    first, further ones are ignored so that stopping cleanly is not itself interrupted."""

    def handler(signum: int, frame: FrameType | None) -> None:
        for s in (signal.SIGINT, signal.SIGTERM):
            signal.signal(s, signal.SIG_IGN)
        raise _Stop(signum)

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, old in previous.items():
            signal.signal(s, old)


def fail_unfinished(dag_id: str, run_id: str) -> list[str]:
    """Mark a stopped run failed in the metadata database, as Airflow's "mark failed" does:
    tasks under way fail, tasks not started are skipped. Returns the unfinished task labels."""
    from airflow.models import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, State, TaskInstanceState

    not_started = (None, TaskInstanceState.SCHEDULED)
    unfinished = []
    with create_session() as session:
        for ti in _task_instances(session, dag_id, run_id):
            if ti.state in State.finished:
                continue
            unfinished.append(task_label(ti.task_id, ti.map_index))
            started = ti.state not in not_started
            ti.state = TaskInstanceState.FAILED if started else TaskInstanceState.SKIPPED
            ti.trigger_id = None
        run = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).one()
        run.state = DagRunState.FAILED
    return unfinished


def task_label(task_id: str, map_index: int) -> str:
    """How a task instance is named in progress lines: `tune[1]` for a mapped one."""
    return task_id if map_index < 0 else f"{task_id}[{map_index}]"


@dataclass(frozen=True)
class WatchedRun:
    code: int  # the `dag.test()` process's exit code: 0 when the run succeeded
    run_id: str | None


def watch_dag_test(
    dag_id: str,
    settings: Settings,
    conf: dict,
    log: Path,
    echo: Callable[[str], None],
    on_state: Callable[[str, str], None] | None = None,
) -> WatchedRun:
    """Run `dag.test()` in a child process (its logs go to `log`) and report progress;
    `on_state(task_label, state)` hears every change.

    The child runs in its own process group, so a terminal's Ctrl-C reaches only this process,
    which then stops the child's whole group within `STOP_GRACE_SECONDS`, marks the run failed
    and raises `RunInterrupted`; SIGTERM does the same. Call from the main thread.
    """
    import json

    apply_environment(settings)
    code = (
        "import json, sys; from maestro.platform.airflow_env import run_dag_test; "
        "from maestro.config import get_settings; "
        f"state, run_id = run_dag_test({dag_id!r}, get_settings(), json.loads(sys.argv[1])); "
        "print('MAESTRO_RESULT', state, run_id); sys.exit(0 if state == 'success' else 1)"
    )
    started = time.time()
    seen: dict[tuple[str, int], str | None] = {}
    run_id, child = None, None
    with log.open("a") as out, _signals_raise_stop():
        try:
            child = subprocess.Popen(
                [sys.executable, "-c", code, json.dumps(conf)],
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
            while True:
                done = child.poll() is not None
                run_id, rows = task_states(dag_id, started)
                for task_id, index, state, duration in rows:
                    if seen.get((task_id, index)) == state:
                        continue
                    seen[(task_id, index)] = state
                    label = task_label(task_id, index)
                    if state in REPORTED_STATES:
                        took = f" in {duration:.1f}s" if duration and state == "success" else ""
                        echo(f"  {label:<24} {state}{took}")
                    if on_state is not None:
                        on_state(label, state)
                if done:
                    return WatchedRun(child.returncode, run_id)
                time.sleep(1.0)
        except _Stop as stop:
            if child is not None:
                stop_group(child, signal.SIGINT, STOP_GRACE_SECONDS)
            run_id = task_states(dag_id, started)[0]
            unfinished = fail_unfinished(dag_id, run_id) if run_id else []
            raise RunInterrupted(stop.signum, run_id, unfinished) from None
        except BaseException:
            if child is not None and child.poll() is None:
                stop_group(child, signal.SIGINT, STOP_GRACE_SECONDS)
            raise

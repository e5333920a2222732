"""`maestro up`: Airflow's components, the MLflow UI and the Evidently UI on the platform's
embedded state; with Debian's Prometheus and Pushgateway installed, those too (the jobs push
their figures to the Pushgateway, Prometheus scrapes it and the model server, with the alert
rules of `ops/prometheus`)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path

from maestro.config import Settings
from maestro.files import atomic_write_text, open_private
from maestro.platform.airflow_env import airflow_bin, apply_environment
from maestro.platform.credentials import passwords_file
from maestro.platform.processes import reap_group, signal_group
from maestro.web import answers

AIRFLOW_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
HOST = "127.0.0.1"
LOOPBACK = ("127.0.0.1", "localhost", "::1")
WORKER = "worker-"  # the Celery workers' component names: worker-1, worker-2, ...


@dataclass(frozen=True)
class Ports:
    airflow: int = 8080
    mlflow: int = 5000
    evidently: int = 8085
    prometheus: int = 9090
    pushgateway: int = 9091


def up_command(ports: Ports) -> list[str]:
    """`maestro up` on these ports (tests and benchmarks run it beside other platforms)."""
    command = [str(Path(sys.executable).with_name("maestro")), "up"]
    for name, port in vars(ports).items():
        command += [f"--{name}-port", str(port)]
    return command


def metrics_binaries() -> dict[str, str]:
    """Debian's Prometheus and Pushgateway, where installed."""
    found = {
        "prometheus": shutil.which("prometheus"),
        "pushgateway": shutil.which("prometheus-pushgateway") or shutil.which("pushgateway"),
    }
    return {name: path for name, path in found.items() if path}


def prometheus_config(settings: Settings, ports: Ports) -> Path:
    """`ops/prometheus/prometheus.yml` with this machine's addresses, and its rules."""
    import yaml

    ops = settings.project_dir / "ops" / "prometheus"
    config = yaml.safe_load((ops / "prometheus.yml").read_text())
    config.pop("alerting")  # no Alertmanager here: firing alerts show in Prometheus's UI
    config["rule_files"] = [str(ops / "rules" / "*.yml")]
    pushgateway = settings.pushgateway_url or f"{HOST}:{ports.pushgateway}"
    targets = {
        "maestro-serving": f"{HOST}:{settings.serving_port}",
        "pushgateway": pushgateway.split("://")[-1],
    }
    folder = settings.home / "prometheus"
    folder.mkdir(parents=True, exist_ok=True)
    for job in config["scrape_configs"]:
        job["static_configs"][0]["targets"] = [targets[job["job_name"]]]
        if "authorization" in job:  # the model server's token, or none when it has none
            job.pop("authorization")
            if settings.serving_token:
                atomic_write_text(folder / "serving_token", settings.serving_token)
                job["authorization"] = {"credentials_file": str(folder / "serving_token")}
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def platform_commands(settings: Settings, ports: Ports) -> dict[str, list[str]]:
    """The processes of a local platform: Airflow's components, the MLflow server, the
    Evidently UI, and Prometheus with its Pushgateway where installed."""
    commands = {name: [airflow_bin(), name] for name in AIRFLOW_COMPONENTS}
    commands["api-server"] += ["--host", HOST, "--port", str(ports.airflow)]
    mlflow_server = mlflow_command(settings, ports)
    if mlflow_server:
        commands["mlflow"] = mlflow_server
    commands["evidently"] = [
        str(Path(sys.executable).with_name("evidently")),
        "ui",
        "--workspace",
        str(settings.evidently_dir),
        "--host",
        HOST,
        "--port",
        str(ports.evidently),
    ]
    if settings.executor == "celery":
        commands.update(worker_commands(settings))
    binaries = metrics_binaries()
    if "pushgateway" in binaries and not settings.pushgateway_url:  # else: the one configured
        commands["pushgateway"] = [
            binaries["pushgateway"],
            f"--web.listen-address={HOST}:{ports.pushgateway}",
        ]
    if "prometheus" in binaries:
        commands["prometheus"] = [
            binaries["prometheus"],
            f"--config.file={prometheus_config(settings, ports)}",
            f"--storage.tsdb.path={settings.home / 'prometheus' / 'data'}",
            f"--web.listen-address={HOST}:{ports.prometheus}",
        ]
    return commands


def mlflow_command(settings: Settings, ports: Ports) -> list[str] | None:
    """The MLflow server: over the tracking store (the UI) or, when clients reach MLflow over
    HTTP, the tracking server at that address with its backend store, serving the artifacts;
    none when that server is on another machine."""
    from urllib.parse import urlsplit

    port, artifacts = ports.mlflow, ["--default-artifact-root", settings.artifact_root]
    if settings.tracking_server:
        address = urlsplit(settings.tracking_uri)
        if address.hostname not in LOOPBACK:
            return None
        port = address.port or 80
        artifacts = ["--serve-artifacts", "--artifacts-destination", settings.artifact_root]
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        settings.backend_store,
        *artifacts,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    if settings.production:  # users and passwords: MLflow's basic-auth app
        command += ["--app-name", "basic-auth"]
    return command


def worker_commands(settings: Settings) -> dict[str, list[str]]:
    """`celery_workers` Celery workers, each serving the default and training queues under its
    own name (`airflow celery worker`); their task logs are files in the shared log folder."""
    from maestro.vocabulary import TRAINING_QUEUE

    return {
        f"{WORKER}{i}": [
            airflow_bin(),
            "celery",
            "worker",
            "--celery-hostname",
            f"{WORKER}{i}@%h",
            "--queues",
            f"default,{TRAINING_QUEUE}",
            "--concurrency",
            str(settings.worker_concurrency),
            "--skip-serve-logs",
        ]
        for i in range(1, settings.celery_workers + 1)
    }


def platform_environment(ports: Ports, started: Collection[str]) -> dict[str, str]:
    """Where task processes reach Airflow's execution API and the Pushgateway (the one the
    platform starts, if it is among the `started` components), and the UIs' own addresses."""
    env = {
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://{HOST}:{ports.airflow}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://localhost:{ports.airflow}",
        "MAESTRO_AIRFLOW_API_URL": f"http://{HOST}:{ports.airflow}",
        "MAESTRO_MLFLOW_UI_URL": f"http://localhost:{ports.mlflow}",
    }
    if "pushgateway" in started:
        env["MAESTRO_PUSHGATEWAY_URL"] = f"{HOST}:{ports.pushgateway}"
    return env


def health_urls(ports: Ports, started: Collection[str] | None = None) -> dict[str, str]:
    """Where each component says it is up (of those `started`; default: all it may start)."""
    urls = {
        "airflow": f"http://{HOST}:{ports.airflow}/api/v2/monitor/health",
        "mlflow": f"http://{HOST}:{ports.mlflow}/health",
        "evidently": f"http://{HOST}:{ports.evidently}/api/version",
    }
    binaries = metrics_binaries()
    for name in ("prometheus", "pushgateway"):
        if name in binaries:
            urls[name] = f"http://{HOST}:{getattr(ports, name)}/-/ready"
    if started is None:
        return urls
    names = set(started) | ({"airflow"} if "api-server" in started else set())
    return {k: v for k, v in urls.items() if k in names}


def run_platform(settings: Settings, ports: Ports, echo: Callable[[str], None]) -> int:
    """Start every component, say when they answer, restart one that exits, and stop them all
    on Ctrl-C or SIGTERM (or when one keeps failing)."""
    apply_environment(settings)
    commands = platform_commands(settings, ports)
    os.environ.update(platform_environment(ports, commands))
    stopping = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stopping.append(True))
    supervisor = Supervisor(commands, settings.home / "logs", echo)
    try:
        supervisor.start_all()
        waiting = health_urls(ports, commands)
        started = time.perf_counter()
        while not stopping and supervisor.check():
            for name, url in list(waiting.items()):
                if answers(url):
                    echo(f"{name} answers  ({time.perf_counter() - started:.0f}s)")
                    del waiting[name]
                    if not waiting:
                        _print_addresses(settings, ports, echo)
            time.sleep(1)
        return 0 if stopping else 1
    finally:
        stop(supervisor.children, echo)


RESTART_DELAYS = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)  # seconds before the 1st, 2nd, ... restart
GIVE_UP_AFTER = 5  # exits of one component within RESTART_WINDOW: stop everything
RESTART_WINDOW = 600.0


class Supervisor:
    """The platform's processes, each in its own session with its log file. A component that
    exits is started again after a growing delay, with a line saying so; one that exits
    GIVE_UP_AFTER times within RESTART_WINDOW seconds is given up on (`check` is False)."""

    def __init__(
        self,
        commands: dict[str, list[str]],
        logs: Path,
        echo: Callable[[str], None],
        delays: tuple[float, ...] = RESTART_DELAYS,
        give_up_after: int = GIVE_UP_AFTER,
        window: float = RESTART_WINDOW,
    ) -> None:
        self.commands, self.logs, self.echo = commands, logs, echo
        self.delays, self.give_up_after, self.window = delays, give_up_after, window
        self.children: dict[str, subprocess.Popen] = {}
        self._exits: dict[str, list[float]] = {name: [] for name in commands}
        self._due: dict[str, float] = {}  # component -> when it starts again

    def start_all(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        for name in self.commands:
            self._start(name)
            self.echo(f"started {name:<14} pid {self.children[name].pid}, log {self._log(name)}")

    def check(self) -> bool:
        """Restart what is due; note what exited since. False once one was given up on."""
        now = time.monotonic()
        for name, due in list(self._due.items()):
            if now >= due:
                del self._due[name]
                self._start(name)
                self.echo(f"restarted {name} pid {self.children[name].pid}")
        for name, child in list(self.children.items()):
            if name in self._due or child.poll() is None:
                continue
            signal_group(child, signal.SIGKILL)  # what is left of it (a worker's pool, ...)
            exits = [t for t in self._exits[name] if now - t < self.window] + [now]
            self._exits[name] = exits
            if len(exits) >= self.give_up_after:
                self.echo(
                    f"stopped: {name} exited {len(exits)} times within {self.window:.0f}s "
                    f"(last code {child.returncode}); see {self._log(name)}"
                )
                return False
            delay = self.delays[min(len(exits), len(self.delays)) - 1]
            self._due[name] = now + delay
            self.echo(
                f"{name} exited (code {child.returncode}); restarting in {delay:.0f}s "
                f"(exit {len(exits)} of {self.give_up_after} allowed within {self.window:.0f}s)"
            )
        return True

    def _start(self, name: str) -> None:
        with open_private(self._log(name)) as out:
            # own session: a Ctrl-C in the terminal reaches `maestro up` only, which then
            # stops the components in order rather than all at once
            self.children[name] = subprocess.Popen(
                self.commands[name],
                stdout=out,
                stderr=out,
                start_new_session=True,
                env={**os.environ, **component_environment(name)},
            )

    def _log(self, name: str) -> Path:
        return self.logs / f"{name}.log"


def check_executor(settings: Settings) -> None:
    """The CeleryExecutor needs a metadata database that many machines share (not SQLite)."""
    from maestro.errors import BadInput
    from maestro.platform.backup import airflow_database

    apply_environment(settings)  # `.env` may set the database
    if settings.executor == "celery" and airflow_database(settings).startswith("sqlite"):
        raise BadInput(
            "MAESTRO_EXECUTOR=celery: Airflow's metadata database is SQLite; set "
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN to a PostgreSQL URL (the workers and the "
            "scheduler share it, and it is the Celery result backend)"
        )


def component_environment(name: str) -> dict[str, str]:
    """What one component adds to the platform's environment: a Celery worker names itself."""
    if not name.startswith(WORKER):
        return {}
    return {
        "MAESTRO_WORKER_NAME": name,
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "maestro.platform.processes.worker_hostname",
    }


def _print_addresses(settings: Settings, ports: Ports, echo: Callable[[str], None]) -> None:
    passwords = passwords_file(settings.home)
    echo(f"Airflow UI     http://localhost:{ports.airflow}  (user admin, password in {passwords})")
    echo(f"MLflow UI      http://localhost:{ports.mlflow}")
    echo(f"Evidently UI   http://localhost:{ports.evidently}  (monitoring reports per model)")
    binaries = metrics_binaries()
    if "prometheus" in binaries:
        echo(f"Prometheus     http://localhost:{ports.prometheus}  (alerts: /alerts)")
    else:
        echo("Prometheus     not installed (apt-get install prometheus prometheus-pushgateway)")
    echo("Ctrl-C stops everything.")


def stop(
    children: dict[str, subprocess.Popen], echo: Callable[[str], None], grace: float = 30.0
) -> None:
    """SIGTERM every component's process group, then SIGKILL what is left after `grace`."""
    for child in children.values():
        signal_group(child, signal.SIGTERM)  # the whole group: workers and log servers too
    deadline = time.monotonic() + grace
    for name, child in children.items():
        if not reap_group(child, deadline - time.monotonic()):
            echo(f"{name} did not stop in {grace:.0f}s: killed")
    if children:
        echo("stopped")

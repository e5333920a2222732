"""`maestro`: the platform's command line. `maestro --help` lists the commands and
`maestro COMMAND --help` their arguments, both generated from the parser below."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from typing import Any

from maestro.config import Settings, get_settings
from maestro.vocabulary import STRATEGIES, TARGETS


def echo(line: str = "") -> None:
    print(line, flush=True)


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    from maestro.data.features import check_definitions
    from maestro.spec import SpecError, get_spec, load_spec, spec_paths

    paths = [settings.specs_dir / f"{m}.yaml" for m in args.models] or spec_paths(settings)
    failed = 0
    for path in paths:
        try:
            spec = load_spec(path) if path.exists() else get_spec(path.stem, settings)
            check_definitions(spec, settings)
            echo(f"ok      {path.name}")
        except (SpecError, ValueError) as error:
            failed += 1
            echo(f"invalid {error}")
    return 1 if failed else 0


def cmd_features(args: argparse.Namespace, settings: Settings) -> int:
    from maestro.data.features import write_definitions
    from maestro.spec import get_spec, load_spec, spec_paths

    specs = [get_spec(m, settings) for m in args.models] or [
        load_spec(p) for p in spec_paths(settings)
    ]
    for spec in specs:
        echo(f"wrote {write_definitions(spec, settings)}")
    return 0


def cmd_env(args: argparse.Namespace, settings: Settings) -> int:
    from maestro.config import export_environment

    for key, value in export_environment(settings).items():
        echo(f"export {key}='{value}'")
    return 0


def cmd_pod_template(args: argparse.Namespace, settings: Settings) -> int:
    import yaml

    from maestro.deploy.kubernetes import WorkerOptions, worker_pod_template

    options = WorkerOptions(namespace=args.namespace, image=args.image)
    echo(yaml.safe_dump(worker_pod_template(options), sort_keys=False).rstrip())
    return 0


def prepare(settings: Settings) -> None:
    """Create the state folder and bring the Airflow metadata database up to date."""
    from maestro.platform.airflow_env import migrate_metadata_db, private_folder

    echo(f"state folder   {settings.home}")
    private_folder(settings.home)
    started = time.perf_counter()
    migrate_metadata_db(settings, settings.home / "airflow-setup.log")
    echo(f"airflow db     ready ({time.perf_counter() - started:.1f}s)")


def approval_hint(model: str, settings: Settings, approve_as: str | None) -> Any:
    """What to do when the run waits for a human: say how to answer, or (the demo) answer."""
    from maestro import tracking, vocabulary
    from maestro.governance import decisions

    def on_state(label: str, state: str) -> None:
        # dag.test() keeps a deferred task "queued" while it runs the trigger in line
        if label != "request_approval" or state not in ("queued", "deferred"):
            return
        version = tracking.client(settings).get_model_version_by_alias(model, vocabulary.CHALLENGER)
        if approve_as is None:
            echo(
                f"  waiting for a decision on {model} version {version.version}: approve in the "
                f"Airflow UI (Required Actions) or run `maestro approve {model} {version.version}`"
            )
            return
        decisions.record_decision(
            settings,
            model,
            version.version,
            vocabulary.APPROVED,
            approve_as,
            "approved by `maestro demo`, which plays the demo's approver",
            "maestro-demo",
        )
        echo(f"  approved {model} version {version.version} as {approve_as} (the demo's approver)")

    return on_state


def train(model: str, settings: Settings, conf: dict, approve_as: str | None = None) -> int:
    from maestro.platform.airflow_env import RunInterrupted, watch_dag_test
    from maestro.spec import get_spec

    get_spec(model, settings)  # fail now, clearly, on a bad spec
    prepare(settings)
    log = settings.home / "logs" / f"train_{model}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    shown = {k: v for k, v in conf.items() if k != "drift_event"}  # the event: its own line
    echo(f"running DAG    train_{model} {shown or ''} (task logs: {log})")
    started = time.perf_counter()
    on_state = approval_hint(model, settings, approve_as)
    try:
        code = watch_dag_test(f"train_{model}", settings, conf, log, echo, on_state).code
    except RunInterrupted as stop:
        explain_interruption(model, settings, stop)
        return stop.exit_code
    echo(
        f"finished in {time.perf_counter() - started:.0f}s: {'success' if code == 0 else 'FAILED'}"
    )
    if code != 0:
        echo(f"see the task logs in {log}")
        return code
    return show(model, settings)


def explain_interruption(model: str, settings: Settings, stop: Any) -> None:
    """Say what a stopped training run left undone and how to finish it."""
    from maestro.governance import registry
    from maestro.spec import get_spec

    dag_id = f"train_{model}"
    echo(f"\n{stop}: stopped {dag_id} run {stop.run_id or '(not started)'}")
    if stop.run_id:
        echo(f"  marked failed in Airflow; not finished: {', '.join(stop.unfinished) or 'none'}")
    version = registry.version_of_run(settings, model, dag_id, stop.run_id) if stop.run_id else None
    waiting = version is not None and "request_approval" in stop.unfinished
    if waiting and version and version.tags.get("validation_status") == "passed":
        approvers = get_spec(model, settings).governance.approvers
        by = approvers[0] if len(approvers) == 1 else "<approver>"
        echo(
            f"  {model} version {version.version} passed every gate and waits for a decision; "
            "champion has not moved. To finish it:"
        )
        echo(f"    maestro approve {model} {version.version} --by {by}")
        echo(f"    maestro promote {model} {version.version} --by {by}")
        if len(approvers) > 1:
            echo(f"  (approvers: {', '.join(approvers)})")
        echo(f"  or train again: `maestro train {model}`, or trigger {dag_id} on the platform")
    else:
        if version is not None:
            echo(f"  {model} version {version.version} is registered but was not decided on")
        echo(
            f"  champion has not moved; train again: `maestro train {model}`, or trigger "
            f"{dag_id} on the platform (`maestro up`, then the Airflow UI or its REST API)"
        )


def show(model: str, settings: Settings) -> int:
    """Print the challenger version of `model`, its metrics, lineage and where to look."""
    from maestro import tracking, vocabulary

    mlc = tracking.client(settings)
    version = mlc.get_model_version_by_alias(model, vocabulary.CHALLENGER)
    run = mlc.get_run(version.run_id)
    echo()
    echo(f"registered     models:/{model}@challenger -> version {version.version}")
    for key, value in sorted(run.data.metrics.items()):
        echo(f"  {key:<22} {value:.4f}")
    for key in (
        "data_version",
        "data_rows",
        "training_window_start",
        "training_window_end",
        "feature_service",
        "best_family",
        "best_trial",
        "airflow_run_id",
        "code_version",
    ):
        echo(f"  {key:<22} {version.tags.get(key, '')}")
    echo(
        f"validation     {version.tags.get('validation_status', 'not evaluated')} "
        f"(failed: {version.tags.get('validation_failed', 'n/a')})"
    )
    echo(
        f"approval       {version.tags.get('approval', 'none')} {version.tags.get('approval_by', '')}"
    )
    from maestro.governance.registry import champion_version
    from maestro.vocabulary import CHAMPION

    champion = champion_version(settings, model)
    echo(f"{CHAMPION:<14} {f'version {champion.version}' if champion else 'none yet'}")
    echo(f"model card     {version.tags.get('model_card', 'n/a')}")
    pipeline = version.tags.get("pipeline_run_id", "")
    echo(f"artifacts      {run.info.artifact_uri}")
    echo(f"data docs      {mlc.get_run(pipeline).info.artifact_uri}/data_validation/index.html")
    echo(f"tracking store {settings.tracking_uri}")
    echo()
    echo(
        "look at it:    .venv/bin/maestro up   # Airflow UI http://localhost:8080, MLflow UI "
        "http://localhost:5000"
    )
    return 0


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    """The loop end to end: train, gate, approve, deploy; serve drifting traffic, find the
    drift, retrain on its asset event, gate, approve, and roll the new version out by canary."""
    from maestro.spec import get_spec

    approver = (get_spec("demo", settings).governance.approvers or ["admin"])[0]
    trials = {"trials": args.trials} if args.trials else {}
    code = train("demo", settings, trials, approver)
    if code != 0:
        return code
    try:
        code = deploy_champion(settings)
        if code != 0:
            return code
        serve_traffic(settings, args.drift)
        code = monitor("demo", settings)
        if code != 0:
            return code
        from maestro.governance import registry
        from maestro.platform.airflow_env import latest_asset_event
        from maestro.vocabulary import drift_asset_name

        judged = registry.champion_version(settings, "demo").tags["monitoring_run_id"]
        event = latest_asset_event(drift_asset_name("demo"))
        if event is None or event["report_run_id"] != judged:
            echo("no drift, so nothing to retrain")
            return 0
        echo(
            f"drift event    asset {drift_asset_name('demo')}: {event['status']} "
            f"(monitoring run {event['report_run_id']}); train_demo listens to it"
        )
        conf = {**trials, "trigger": "drift", "drift_event": event}
        code = train("demo", settings, conf, approver)
        return code if code != 0 else deploy_champion(settings)
    finally:
        stop_local_server(settings)


def deploy_champion(settings: Settings) -> int:
    """Roll the demo's champion out to the local model server with its deployment DAG (by
    canary), and ask the server for one prediction."""
    from maestro.deploy.strategies import ServerTarget
    from maestro.governance import registry
    from maestro.platform.airflow_env import watch_dag_test
    from maestro.serving.scorer import example_rows

    champion = registry.champion_version(settings, "demo")
    if champion is None:
        echo("no champion, so nothing to deploy")
        return 0
    log = settings.home / "logs" / "deploy_demo.log"
    echo(f"running DAG    deploy_demo (version {champion.version}, canary, local; logs: {log})")
    conf = {"version": str(champion.version), "strategy": "canary", "target": "local"}
    code = watch_dag_test("deploy_demo", settings, conf, log, echo).code
    if code != 0:
        echo(f"deployment FAILED; see {log}")
        return code
    url = f"http://127.0.0.1:{settings.serving_port}"
    row = example_rows("demo", str(champion.version))[0]
    status, answer = ServerTarget(url, settings.plan_path, settings.serving_token).request(
        "POST", "/v1/models/demo/predict", row
    )
    echo(f"served         POST {url}/v1/models/demo/predict -> HTTP {status} {answer.decode()}")
    return 0 if status == 200 else 1


def serve_traffic(settings: Settings, drift: float, rows: int = 1000, batch: int = 50) -> None:
    """Customers that arrive after the training data, shifted by the `drift` knob, scored by
    the local server, then their true labels posted as feedback."""
    import json

    from maestro.data.synthetic import traffic
    from maestro.deploy.strategies import ServerTarget
    from maestro.spec import get_spec

    spec = get_spec("demo", settings)
    frame = traffic(rows, drift)
    server = ServerTarget(
        f"http://127.0.0.1:{settings.serving_port}", settings.plan_path, settings.serving_token
    )
    labels = []
    for start in range(0, rows, batch):
        part = frame.iloc[start : start + batch]
        records = json.loads(part[spec.feature_names].to_json(orient="records"))
        status, body = server.request("POST", "/v1/models/demo/predict", records)
        if status != 200:
            raise RuntimeError(f"the model server answered HTTP {status}: {body[:200]!r}")
        request_id = json.loads(body)["request_id"]
        labels += [
            {"request_id": request_id, "row": row, "label": int(label)}
            for row, label in enumerate(part[spec.target.name])
        ]
    status, body = server.request("POST", "/v1/models/demo/feedback", labels)
    echo(
        f"traffic        {rows} customers with drift knob {drift:g} scored in batches of "
        f"{batch}; feedback: HTTP {status} {body.decode()[:80]}"
    )
    time.sleep(1.5)  # the prediction log's writer takes the last second's requests


def stop_local_server(settings: Settings) -> None:
    import contextlib
    import os
    import signal

    pid_file = settings.home / "serving" / "server.pid"
    if pid_file.exists():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGTERM)
        pid_file.unlink()
        echo("stopped the model server (`maestro serve demo` starts it again)")


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    conf = {k: v for k, v in (("trials", args.trials), ("workers", args.workers)) if v}
    return train(args.model, settings, conf)


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    return show(args.model, settings)


def cmd_decide(args: argparse.Namespace, settings: Settings) -> int:
    from maestro import vocabulary
    from maestro.governance import decisions
    from maestro.spec import get_spec

    spec = get_spec(args.model, settings)
    decisions.check_approver(spec.governance.approvers, args.by, args.model)
    decision = vocabulary.APPROVED if args.command == "approve" else vocabulary.REJECTED
    record = decisions.record_decision(
        settings, args.model, args.version, decision, args.by, args.comment, "cli"
    )
    echo(
        f"{args.model} version {args.version}: {record['decision']} by {record['by']} at {record['at']}"
    )
    return 0


def cmd_promote(args: argparse.Namespace, settings: Settings) -> int:
    from maestro.governance import registry

    done = registry.promote(settings, args.model, args.version, args.by, args.comment)
    echo(f"{args.model}: champion -> version {done['champion']} (previous: {done['previous']})")
    announce_champion(settings, done)
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from maestro.governance import registry

    done = registry.rollback(settings, args.model, args.by, args.comment)
    echo(f"{args.model}: champion -> version {done['champion']} (previous: {done['previous']})")
    announce_champion(settings, done)
    return 0


def announce_champion(settings: Settings, done: dict) -> None:
    """The asset event the DAG's `promote` task would emit, through Airflow's REST API. The
    registry has already moved; without a reachable Airflow the deployment is not triggered,
    which is said, not hidden."""
    from maestro.platform.airflow_api import AirflowAPIError, platform_client
    from maestro.vocabulary import champion_asset_name

    name = champion_asset_name(done["model"])
    try:
        event = platform_client(settings).asset_event(name, {**done, "via": "cli"})
    except AirflowAPIError as error:
        echo(f"warning: no asset event on {name}, so no deployment starts by itself: {error}")
        return
    echo(f"asset event {event['id']} on {name} at {settings.airflow_api_url}")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import os

    # Prometheus' multiprocess mode is the server's to choose (`serve` sets it for its workers),
    # not inherited: Feast turns it on in any process that imports its metrics module
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
        os.environ.pop(name, None)
    from maestro.serving.app import serve

    serve(settings, args.models, args.host, args.port, args.workers)
    return 0


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    from maestro.deploy.strategies import run_deployment

    done = run_deployment(settings, args.model, args.version, args.strategy, args.target, echo)
    echo(f"{done['model']} version {done['version']} serves at {done['url']} ({done['strategy']})")
    return 0


def cmd_feedback(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from maestro.monitoring import feedback
    from maestro.spec import get_spec

    spec = get_spec(args.model, settings)
    stored, refused = feedback.from_file(settings, spec, Path(args.file), args.label)
    echo(f"accepted       {stored} labels for {spec.name} ({feedback.location(settings)})")
    for refusal in refused[:20]:
        echo(f"refused        row {refusal.index} ({refusal.key}): {refusal.reason}")
    if len(refused) > 20:
        echo(f"refused        ... and {len(refused) - 20} more")
    return 0 if stored or not refused else 1


def monitor(model: str, settings: Settings, window_end: str = "") -> int:
    """Run `monitor_<model>` once and print its verdict."""
    from maestro.platform.airflow_env import watch_dag_test

    log = settings.home / "logs" / f"monitor_{model}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    echo(f"running DAG    monitor_{model} (task logs: {log})")
    code = watch_dag_test(f"monitor_{model}", settings, {"window_end": window_end}, log, echo).code
    if code != 0:
        echo(f"monitoring FAILED; see {log}")
        return code
    import mlflow

    from maestro import tracking
    from maestro.governance import registry

    tracking.client(settings)
    run_id = registry.champion_version(settings, model).tags["monitoring_run_id"]
    found = mlflow.artifacts.load_dict(f"runs:/{run_id}/monitoring/verdict.json")
    echo(f"verdict        {found['status']}: {found['reason']}")
    echo(f"monitoring run {run_id} (Evidently report: monitoring/drift.html)")
    return 0


def cmd_monitor(args: argparse.Namespace, settings: Settings) -> int:
    prepare(settings)
    return monitor(args.model, settings, args.window_end)


def cmd_trigger(args: argparse.Namespace, settings: Settings) -> int:
    from maestro.errors import BadInput
    from maestro.platform.trigger import parse_conf, trigger_training

    try:
        conf = parse_conf(args.conf)
    except ValueError as error:
        raise BadInput(str(error)) from None
    return int(trigger_training(settings, args.model, conf, args.wait, args.timeout, echo))


def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from maestro.platform.backup import backup

    manifest = backup(settings, Path(args.dest), args.with_logs)
    kept = ", ".join(
        f"{k} ({v['kind']})" for k, v in manifest["stores"].items() if v["kind"] != "absent"
    )
    echo(f"backup         {args.dest}: {len(manifest['files'])} files, checksummed; {kept}")
    return 0


def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from maestro.platform.backup import restore

    manifest = restore(settings, Path(args.archive), args.force)
    echo(f"restored       {args.archive} (made {manifest['created_at']}) into {settings.home}")
    return 0


def cmd_prepare(args: argparse.Namespace, settings: Settings) -> int:
    """What a platform needs before its components start (`maestro up` does it first; a
    compose stack's init container runs it alone)."""
    from maestro.platform.services import airflow_passwords, check_executor, production_environment

    os.environ.update(production_environment(settings))  # refuses before anything starts
    check_executor(settings)
    airflow_passwords(settings)
    prepare(settings)
    return 0


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:

    from maestro.platform.services import Ports, run_platform

    chosen = {"executor": args.executor, "celery_workers": args.workers}
    settings = settings.model_copy(update={k: v for k, v in chosen.items() if v is not None})
    cmd_prepare(args, settings)
    ports = Ports(
        args.airflow_port,
        args.mlflow_port,
        args.evidently_port,
        args.prometheus_port,
        args.pushgateway_port,
    )
    return run_platform(settings, ports, echo)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="maestro",
        description="Maestro ML: an ML lifecycle platform orchestrated by Apache Airflow, with "
        "MLflow as the system of record.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help="the demo model's whole loop, end to end")
    demo.add_argument("--trials", type=int)
    demo.add_argument(
        "--drift",
        type=float,
        default=1.0,
        help="how far production drifts from the training data (0: not at all)",
    )
    demo.set_defaults(func=cmd_demo)
    tr = sub.add_parser("train", help="run a model's training DAG once")
    tr.add_argument("model")
    tr.add_argument("--trials", type=int)
    tr.add_argument("--workers", type=int)
    tr.set_defaults(func=cmd_train)
    up = sub.add_parser(
        "up", help="start Airflow (UI, scheduler), the MLflow and Evidently UIs, Prometheus"
    )
    up.add_argument("--airflow-port", type=int, default=8080)
    up.add_argument("--mlflow-port", type=int, default=5000)
    up.add_argument("--evidently-port", type=int, default=8085)
    up.add_argument("--prometheus-port", type=int, default=9090)
    up.add_argument("--pushgateway-port", type=int, default=9091)
    up.add_argument(
        "--executor",
        choices=["local", "celery"],
        help="Airflow's executor (default: MAESTRO_EXECUTOR, else local)",
    )
    up.add_argument(
        "--workers", type=int, help="Celery workers to start (default: MAESTRO_CELERY_WORKERS)"
    )
    up.set_defaults(func=cmd_up)
    srv = sub.add_parser("serve", help="the model server (champions by default)")
    srv.add_argument("models", nargs="*", help="models to add to the serving plan")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument(
        "--workers",
        type=int,
        help="server processes on the port (default: MAESTRO_SERVING_WORKERS, else the CPUs)",
    )
    srv.set_defaults(func=cmd_serve)
    dep = sub.add_parser("deploy", help="roll a version out to the model server")
    dep.add_argument("model")
    dep.add_argument("--version", default="", help="default: the champion")
    dep.add_argument("--strategy", default="canary", choices=STRATEGIES)
    dep.add_argument("--target", default="local", choices=TARGETS)
    dep.set_defaults(func=cmd_deploy)
    val = sub.add_parser("validate", help="check model specs and Feast definitions")
    val.add_argument("models", nargs="*")
    val.set_defaults(func=cmd_validate)
    feat = sub.add_parser("features", help="Feast definitions")
    feat.add_argument("action", choices=["generate"])
    feat.add_argument("models", nargs="*")
    feat.set_defaults(func=cmd_features)
    sh = sub.add_parser("show", help="the challenger version of a model")
    sh.add_argument("model")
    sh.set_defaults(func=cmd_show)
    for name, func, help_text in (
        ("approve", cmd_decide, "approve a validated model version"),
        ("reject", cmd_decide, "reject a validated model version"),
        ("promote", cmd_promote, "make an approved version the champion"),
    ):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("model")
        cmd.add_argument("version")
        cmd.add_argument("--comment", default="")
        cmd.add_argument("--by", default=getpass.getuser(), help="who decides (an approver)")
        cmd.set_defaults(func=func)
    rb = sub.add_parser("rollback", help="restore the previous champion")
    rb.add_argument("model")
    rb.add_argument("--comment", default="")
    rb.add_argument("--by", default=getpass.getuser())
    rb.set_defaults(func=cmd_rollback)
    trig = sub.add_parser(
        "trigger",
        help="start a model's training on the platform (CI); exit 0 success, 1 failed, "
        "2 timeout, 3 waiting for approval, 4 refused",
    )
    trig.add_argument("model")
    trig.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE")
    trig.add_argument("--wait", action="store_true", help="follow the run to its end")
    trig.add_argument("--timeout", type=float, default=3600.0, help="seconds, with --wait")
    trig.set_defaults(func=cmd_trigger)
    mon = sub.add_parser("monitor", help="run a model's monitoring DAG once")
    mon.add_argument("model")
    mon.add_argument("--window-end", default="", help="ISO time the window ends (default now)")
    mon.set_defaults(func=cmd_monitor)
    fb = sub.add_parser("feedback", help="load ground-truth labels from a CSV or parquet file")
    fb.add_argument("model")
    fb.add_argument("file")
    fb.add_argument("--label", help="the label column (default: the target's name, or label)")
    fb.set_defaults(func=cmd_feedback)
    bk = sub.add_parser("backup", help="one checksummed archive of every store")
    bk.add_argument("dest", help="the archive to write (.tar.gz)")
    bk.add_argument(
        "--with-logs", action="store_true", help="also the prediction log, feedback, batch scores"
    )
    bk.set_defaults(func=cmd_backup)
    rs = sub.add_parser("restore", help="restore a backup into an empty state")
    rs.add_argument("archive")
    rs.add_argument("--force", action="store_true", help="replace stores that hold data")
    rs.set_defaults(func=cmd_restore)
    pre = sub.add_parser(
        "prepare", help="migrate Airflow's database; in production, write the admin passwords"
    )
    pre.set_defaults(func=cmd_prepare)
    env = sub.add_parser("env", help="shell exports of the platform's environment")
    env.set_defaults(func=cmd_env)
    pod = sub.add_parser(
        "pod-template", help="the KubernetesExecutor's task pod template (YAML on stdout)"
    )
    pod.add_argument("--namespace", default="maestro")
    pod.add_argument("--image", default="maestro-ml:latest")
    pod.set_defaults(func=cmd_pod_template)
    return p


def main(argv: list[str] | None = None) -> int:
    # what the platform writes (databases, logs, keys, passwords) is its owner's alone; the
    # components it starts inherit this
    os.umask(0o077)
    args = parser().parse_args(argv)
    from maestro.errors import BadInput
    from maestro.platform.airflow_env import RunInterrupted

    try:
        return args.func(args, get_settings())
    except BadInput as error:
        echo(f"error: {error}")
        return 2
    except RunInterrupted as stop:
        echo(f"\n{stop}: stopped run {stop.run_id}, marked failed in Airflow")
        return stop.exit_code


if __name__ == "__main__":
    sys.exit(main())

"""`maestro`: the platform's command line. `maestro --help` lists the commands and
`maestro COMMAND --help` their arguments, both generated from the parser below."""

from __future__ import annotations

import argparse
import getpass
import os
import sys

from maestro.config import Settings, get_settings
from maestro.platform.runs import announce_champion, echo, monitor, prepare, show, train
from maestro.vocabulary import STRATEGIES, TARGETS


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


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from maestro.platform.demo import run_demo

    return run_demo(settings, args.trials, args.drift)


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
    from maestro import registry

    done = registry.promote(settings, args.model, args.version, args.by, args.comment)
    echo(f"{args.model}: champion -> version {done['champion']} (previous: {done['previous']})")
    announce_champion(settings, done)
    return 0


def cmd_rollback(args: argparse.Namespace, settings: Settings) -> int:
    from maestro import registry

    done = registry.rollback(settings, args.model, args.by, args.comment)
    echo(f"{args.model}: champion -> version {done['champion']} (previous: {done['previous']})")
    announce_champion(settings, done)
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    import os

    # Prometheus' multiprocess mode is the server's to choose (`serve` sets it for its workers),
    # not inherited: Feast turns it on in any process that imports its metrics module
    for name in ("PROMETHEUS_MULTIPROC_DIR", "PROMETHEUS_MULTIPROCESS_DIR"):
        os.environ.pop(name, None)
    from maestro.serving.runner import serve

    serve(settings, args.models, args.host, args.port, args.workers)
    return 0


def cmd_deploy(args: argparse.Namespace, settings: Settings) -> int:
    from maestro.deploy.rollout import run_deployment

    done = run_deployment(settings, args.model, args.version, args.strategy, args.target, echo)
    echo(f"{done['model']} version {done['version']} serves at {done['url']} ({done['strategy']})")
    return 0


def cmd_feedback(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from maestro.logs import labels
    from maestro.spec import get_spec

    spec = get_spec(args.model, settings)
    stored, refused = labels.from_file(settings, spec, Path(args.file), args.label)
    echo(f"accepted       {stored} labels for {spec.name} ({labels.labels_store(settings).shown})")
    for refusal in refused[:20]:
        echo(f"refused        row {refusal.index} ({refusal.key}): {refusal.reason}")
    if len(refused) > 20:
        echo(f"refused        ... and {len(refused) - 20} more")
    return 0 if stored or not refused else 1


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
    from maestro.platform.credentials import airflow_passwords, production_environment
    from maestro.platform.services import check_executor

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

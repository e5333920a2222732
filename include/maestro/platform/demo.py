"""`maestro demo`: the loop end to end on the demo model, in this process: train, gate,
approve and deploy; serve drifting traffic with its labels, find the drift, retrain on its
asset event, and roll the new version out by canary."""

from __future__ import annotations

import time

from maestro.config import Settings
from maestro.platform.runs import echo, monitor, train


def run_demo(settings: Settings, trials: int | None, drift: float) -> int:
    """The loop end to end: train, gate, approve, deploy; serve drifting traffic, find the
    drift, retrain on its asset event, gate, approve, and roll the new version out by canary."""
    from maestro.spec import get_spec

    approver = (get_spec("demo", settings).governance.approvers or ["admin"])[0]
    conf = {"trials": trials} if trials else {}
    code = train("demo", settings, conf, approver)
    if code != 0:
        return code
    try:
        code = deploy_champion(settings)
        if code != 0:
            return code
        serve_traffic(settings, drift)
        code = monitor("demo", settings)
        if code != 0:
            return code
        from maestro import registry
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
        retrain = {**conf, "trigger": "drift", "drift_event": event}
        code = train("demo", settings, retrain, approver)
        return code if code != 0 else deploy_champion(settings)
    finally:
        stop_local_server(settings)


def deploy_champion(settings: Settings) -> int:
    """Roll the demo's champion out to the local model server with its deployment DAG (by
    canary), and ask the server for one prediction."""
    from maestro import registry
    from maestro.deploy.target import ServerTarget
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
    from maestro.deploy.target import ServerTarget
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

"""Alerts and dashboards for real: Debian's Prometheus scrapes a real model server and a real
Pushgateway (fed by the real monitoring job, notifier and deployment code) on loopback, with
the shipped configuration and rules; Alertmanager, with the shipped routing, posts to a webhook
receiver here. Serving errors and latency make alerts arrive and then resolve, and every panel
of the Grafana dashboards is a query that parses and returns a series.

Time is compressed: scrapes and evaluations every second, the rules' `for:` durations set to
one second and their range windows to ten (promtool's unit tests judge the real durations)."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from maestro import tracking
from maestro.config import Settings
from maestro.web import answers, client, free_port
from tests.integration.test_serving import ROW, register_versions, server
from tests.support import PROJECT, needs_shared_data, webhook_receiver

pytestmark = pytest.mark.slow

OPS = PROJECT / "ops"
SOUTH = {**ROW, "region": "south"}  # version 3 never saw the south: it fails these (500)
NORTH = {**ROW, "region": "north"}


def compressed_rules(target: Path) -> None:
    text = (OPS / "prometheus" / "rules" / "maestro.rules.yml").read_text()
    text = re.sub(r"for: \d+[smh]", "for: 1s", text)
    text = re.sub(r"\[\d+[smhd]\]", "[10s]", text)
    target.write_text(text)


def prometheus_config(
    folder: Path, serving: list[int], pushgateway: int, alertmanager: int
) -> Path:
    config = yaml.safe_load((OPS / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [
        f"127.0.0.1:{alertmanager}"
    ]
    for job in config["scrape_configs"]:
        ports = serving if job["job_name"] == "maestro-serving" else [pushgateway]
        job["static_configs"][0]["targets"] = [f"127.0.0.1:{port}" for port in ports]
        job.pop("authorization", None)  # the test's model server has no token
    (folder / "rules").mkdir()
    compressed_rules(folder / "rules" / "maestro.rules.yml")
    path = folder / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def alertmanager_config(folder: Path, webhook: str) -> Path:
    config = yaml.safe_load((OPS / "alertmanager" / "alertmanager.yml").read_text())
    config["receivers"][0]["webhook_configs"][0]["url"] = webhook
    config["route"] |= {"group_wait": "1s", "group_interval": "1s", "repeat_interval": "1h"}
    path = folder / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def webhook():
    with webhook_receiver() as hook:
        yield hook


@pytest.fixture
def stack(tmp_path, use_specs, prometheus_tools, monkeypatch, webhook):
    """Webhook receiver, Pushgateway, Alertmanager, the model servers (demo version 3, and a
    multiclass forest_cover for the panels only such models have) and Prometheus, each on a
    free loopback port."""
    needs_shared_data("covtype.csv")
    ports = {name: free_port() for name in ("pushgateway", "alertmanager", "prometheus")}
    monkeypatch.setenv("MAESTRO_PUSHGATEWAY_URL", f"127.0.0.1:{ports['pushgateway']}")
    settings = use_specs(
        {
            "demo": {
                # a budget no request can keep: the latency alerts must fire
                "governance": {"latency_budget_ms": 0.001},
                "monitoring": {"min_rows": 50, "min_labels": 20},
            }
        }
    )
    register_versions(settings)
    reference_of_version_3(settings)
    register_forest_cover(settings)
    processes = []

    def start(*command: str) -> None:
        log = (tmp_path / f"{Path(command[0]).name}.log").open("w")
        processes.append(subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT))

    start(
        str(prometheus_tools["pushgateway"]),
        f"--web.listen-address=127.0.0.1:{ports['pushgateway']}",
    )
    start(
        str(prometheus_tools["alertmanager"]),
        f"--config.file={alertmanager_config(tmp_path, webhook[0])}",
        f"--storage.path={tmp_path / 'alertmanager'}",
        f"--web.listen-address=127.0.0.1:{ports['alertmanager']}",
        "--cluster.listen-address=",
    )
    for name in ("pushgateway", "alertmanager"):
        wait_for(lambda name=name: ready(ports[name]), 30, f"{name} to be ready")
    specs = {"MAESTRO_SPECS_DIR": str(settings.specs_dir)}
    with (
        server(settings.home, **specs) as (_, target),
        server(settings.home, "forest_cover", **specs) as (_, multiclass),
    ):
        answer_forest_cover(settings, multiclass)
        serving = [int(t.base_url.rsplit(":", 1)[1]) for t in (target, multiclass)]
        config = prometheus_config(tmp_path, serving, ports["pushgateway"], ports["alertmanager"])
        start(
            str(prometheus_tools["prometheus"]),
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
        )
        wait_for(lambda: ready(ports["prometheus"]), 30, "Prometheus to be ready")
        try:
            yield SimpleNamespace(
                settings=settings,
                target=target,
                prometheus=f"http://127.0.0.1:{ports['prometheus']}",
                received=webhook[1],
            )
        finally:
            for process in processes:
                process.terminate()
                process.wait(timeout=30)


def register_forest_cover(settings) -> None:
    """A small LightGBM model of the seven cover types, forest_cover's champion."""
    from maestro.spec import get_spec
    from tests.support import fit_lightgbm, forest_cover_frame, register_version

    spec = get_spec("forest_cover", settings)
    frame = forest_cover_frame(settings)
    model = fit_lightgbm(spec, frame, {"n_estimators": 10, "num_leaves": 15})
    register_version(settings, spec, model, frame)


def answer_forest_cover(settings, target) -> None:
    """Some rows answered, so that its class counters exist."""
    from maestro.spec import get_spec
    from tests.support import forest_cover_frame

    spec = get_spec("forest_cover", settings)
    frame = forest_cover_frame(settings).tail(300)
    rows = json.loads(frame[spec.feature_names].to_json(orient="records"))
    for start in range(0, len(rows), 100):
        part = rows[start : start + 100]
        status, body = target.request("POST", "/v1/models/forest_cover/predict", part)
        assert status == 200, body


def ready(port: int) -> bool:
    return answers(f"http://127.0.0.1:{port}/-/ready")


def reference_of_version_3(settings: Settings) -> None:
    """Version 3's training rows where its lineage says (as the training DAG leaves them), and
    version 3 as champion."""
    from maestro.data.synthetic import generate

    folder = settings.home / "training_sets" / "demo" / "v3hash"
    folder.mkdir(parents=True)
    frame = generate(3000)
    north = frame[frame["region"] != "south"]  # what version 3 learnt from
    north.iloc[:1500].to_parquet(folder / "train.parquet")
    north.iloc[1500:].to_parquet(folder / "valid.parquet")
    mlc = tracking.client(settings)
    mlc.set_model_version_tag("demo", "3", "data_version", "v3hash")
    mlc.set_model_version_tag("demo", "3", "validation_status", "passed")
    mlc.set_registered_model_alias("demo", "champion", "3")


def serving_plan_to_version_3(target) -> None:
    from maestro.serving.plan import ModelPlan, Route

    target.apply("demo", ModelPlan((Route("3", 100),)))


class Traffic(threading.Thread):
    """Requests until stopped, a share of them from the south (500s); keeps the ids answered."""

    def __init__(self, target, south_share: float) -> None:
        super().__init__(daemon=True)
        self.target, self.south_share = target, south_share
        self.ids: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        sent = 0
        while not self.stop.is_set():
            row = SOUTH if (sent % 100) < self.south_share * 100 else NORTH
            status, body = self.target.request("POST", "/v1/models/demo/predict", row)
            if status == 200:
                self.ids.append(json.loads(body)["request_id"])
            sent += 1
            time.sleep(0.005)


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def notified(received: list[dict], alertname: str, status: str) -> bool:
    return any(
        alert["labels"]["alertname"] == alertname and alert["status"] == status
        for message in received
        for alert in message["alerts"]
    )


def push_job_figures(settings: Settings, target, ids: list[str]) -> None:
    """What the jobs push in production: labels, a monitoring verdict, the pipeline's state,
    a training run's outcome, a rolled-back canary."""
    from maestro.deploy.rollout import report_rollback
    from maestro.monitoring import approvals, stages
    from maestro.orchestration.notify import RunOutcomeNotifier

    labels = [{"request_id": i, "label": n % 2} for n, i in enumerate(ids[:40])]
    status, body = target.request("POST", "/v1/models/demo/feedback", labels)
    assert status == 200, body
    time.sleep(1.5)  # the prediction log's writer gets the last second's requests
    verdict = stages.judge("demo", settings)
    assert verdict.status != "insufficient_data" and verdict.labels == 40, verdict
    approvals.watch_pipeline("demo", settings)
    run = SimpleNamespace(dag_id="train_demo", run_id="manual__1")
    RunOutcomeNotifier(model="demo", state="failed").notify({"dag_run": run})
    RunOutcomeNotifier(model="demo", state="success").notify({"dag_run": run})
    report_rollback(settings, "demo", "4", "3")


def firing_alerts(prometheus, model: str = "demo") -> set[str]:
    alerts = prometheus.get("/api/v1/alerts").json()["data"]["alerts"]
    return {
        a["labels"]["alertname"]
        for a in alerts
        if a["state"] == "firing" and a["labels"].get("model") == model
    }


def panel_queries() -> list[tuple[str, str, str]]:
    found = []
    for path in sorted((OPS / "grafana" / "dashboards").glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for query in panel["targets"]:
                found.append((path.stem, panel["title"], query["expr"].replace("$model", ".+")))
    return found


def test_alerts_fire_and_resolve_and_every_dashboard_panel_returns_a_series(stack):
    settings, target = stack.settings, stack.target
    serving_plan_to_version_3(target)
    prometheus = client(stack.prometheus)
    wait_for(
        lambda: (
            len(prometheus.get("/api/v1/targets").json()["data"]["activeTargets"]) == 3
            and all(
                t["health"] == "up"
                for t in prometheus.get("/api/v1/targets").json()["data"]["activeTargets"]
            )
        ),
        60,
        "Prometheus to scrape the server and the Pushgateway",
    )
    traffic = Traffic(target, south_share=0.2)
    traffic.start()
    for alert in ("MaestroServerErrorsCritical", "MaestroLatencyP95OverBudget"):
        wait_for(
            lambda alert=alert: notified(stack.received, alert, "firing"),
            60,
            f"{alert} at the webhook",
        )
    push_job_figures(settings, target, list(traffic.ids))
    wait_for(
        lambda: "MaestroCanaryRolledBack" in firing_alerts(prometheus), 30, "the pushed rollback"
    )
    # a failed training run followed by a successful one is no alert
    runs = prometheus.get(
        "/api/v1/query", params={"query": "maestro_dag_run_end_timestamp_seconds"}
    ).json()["data"]["result"]
    assert "MaestroTrainingFailed" not in firing_alerts(prometheus), runs
    empty = []
    for dashboard, title, expr in panel_queries():
        answer = prometheus.get("/api/v1/query", params={"query": expr}).json()
        assert answer["status"] == "success", f"{dashboard}: {title}: {answer}"
        if not answer["data"]["result"]:
            empty.append(f"{dashboard}: {title}: {expr}")
    assert empty == [], "panels without a series"
    assert len(panel_queries()) >= 25

    # no more traffic: the rates empty out and both alerts resolve at the webhook
    traffic.stop.set()
    traffic.join()
    for alert in ("MaestroServerErrorsCritical", "MaestroLatencyP95OverBudget"):
        wait_for(
            lambda alert=alert: notified(stack.received, alert, "resolved"), 90, f"{alert} resolved"
        )

"""A deployment run end to end: which version (the param, else the champion named by the
triggering asset event, else the current champion), the target (the local server, started if
nothing answers, or the Kubernetes stack), the rollout, and a rollback reported to Prometheus."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from maestro.config import Settings
from maestro.deploy.strategies import deploy
from maestro.deploy.target import DeployError, ServerTarget
from maestro.errors import BadInput
from maestro.files import atomic_write_text
from maestro.serving.plan import ModelPlan, Plan, Route
from maestro.waiting import wait_for
from maestro.web import answers


def requested_deployment(params: Mapping[str, Any], events: list[dict]) -> dict:
    """What a deployment run is asked to do: the `version` param, else the champion named by
    the promotion's (or rollback's) asset event, else empty (the current champion)."""
    version = params["version"]
    for extra in events:
        version = version or str(extra.get("champion", ""))
    return {"version": version, "strategy": params["strategy"], "target": params["target"]}


def run_deployment(
    settings: Settings,
    model: str,
    version: str,
    strategy: str,
    target: str,
    say: Callable[[str], None] = print,
) -> dict:
    """Deploy `version` (default: the champion) of `model` to the local server or to
    Kubernetes, with `strategy`."""
    from maestro import registry, tracking
    from maestro.serving.scorer import example_rows
    from maestro.spec import get_spec

    spec = get_spec(model, settings)
    tracking.use_tracking(settings)
    if not version:
        champion = registry.champion_version(settings, model)
        if champion is None:
            raise BadInput(f"{model} has no champion to deploy: promote a version first")
        version = str(champion.version)
    rows = example_rows(model, version)
    budget = spec.governance.latency_budget_ms
    if target == "local":
        server = ServerTarget(
            local_server(settings, model, say), settings.plan_path, settings.serving_token
        )
    elif target == "kubernetes":
        from maestro.deploy import kubernetes as k8s

        options = k8s.ServingOptions(
            namespace=settings.k8s_namespace,
            image=settings.serving_image,
            drain_seconds=settings.prediction_log_drain_seconds,
        )
        k8s.apply_stack(model, Plan({model: ModelPlan((Route(version, 100),))}), options)
        store = k8s.ConfigMapPlanStore(model, options.namespace)
        server = ServerTarget(
            k8s.service_url(model, options.namespace), store, settings.serving_token
        )
    else:
        raise BadInput(f"target {target!r}: choose local or kubernetes")
    stable = server.serving_version(model)
    try:
        done = deploy(server, model, version, strategy, rows, budget, say=say)
    except Exception:
        if stable is not None and stable != version:
            report_rollback(settings, model, version, stable)
        raise
    return {**done, "target": target, "url": server.base_url}


def report_rollback(settings: Settings, model: str, version: str, stable: str) -> None:
    """Tell Prometheus that a rollout of `version` was rolled back (`MaestroCanaryRolledBack`)."""
    import time

    from maestro.monitoring import metrics

    metrics.push(
        settings,
        "maestro_deployments",
        model,
        [
            (
                "maestro_deployment_rollback_timestamp_seconds",
                "When a rollout was last rolled back to the stable version",
                {"version": version, "stable": stable},
                time.time(),
            )
        ],
    )


def local_server(settings: Settings, model: str, say: Callable[[str], None] = print) -> str:
    """The local model server's address; started (detached, logging to the state folder) when
    nothing answers there yet."""
    import subprocess
    import sys

    url = f"http://127.0.0.1:{settings.serving_port}"
    if answers(f"{url}/health"):
        return url
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [
        str(Path(sys.executable).with_name("maestro")),
        "serve",
        model,
        "--port",
        str(settings.serving_port),
    ]
    with (logs / "serve.log").open("a") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    atomic_write_text(settings.home / "serving" / "server.pid", str(process.pid))
    say(f"started the model server at {url} (pid {process.pid}, log {logs / 'serve.log'})")

    def ready() -> bool:
        if process.poll() is not None:
            raise DeployError(f"the model server at {url} exited; see {logs / 'serve.log'}")
        return answers(f"{url}/ready")

    what = f"the model server at {url} did not start; see {logs / 'serve.log'}"
    wait_for(ready, timeout=120, interval=0.5, what=what, error=DeployError)
    return url

"""Rollout strategies, applied to a model server through its serving plan.

Every strategy moves traffic in steps; after each step a smoke test sends real requests, and a
failure puts the plan back as it was before the deployment and raises DeployError:

- rolling: the new version takes all traffic once it is loaded (the server loads it before it
  switches, so no request is dropped);
- blue-green: the new version is loaded beside the old one with no traffic, smoke-tested
  directly, then takes all traffic at once; the old one stays loaded (weight 0) for an
  instant switch back;
- canary: 10% -> 50% -> 100%; between steps, the error rate (at most 1%) and p99 latency
  (within the spec's budget) of the new version, read from the server's /metrics.

`ServerTarget` drives one server over HTTP and its plan file: the local target, and what the
deployer pod does against the Service on Kubernetes (where the plan is a ConfigMap).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from maestro.config import Settings
from maestro.errors import BadInput
from maestro.files import atomic_write_text
from maestro.serving.plan import ModelPlan, Plan, Route, read_plan, write_plan
from maestro.vocabulary import SMOKE, STRATEGIES, TRAFFIC_HEADER
from maestro.waiting import wait_for
from maestro.web import client

CANARY_STEPS = (10, 50, 100)
MAX_ERROR_RATE = 0.01


class DeployError(BadInput):
    """A rollout that failed (and was put back): retrying the same version cannot help."""


@dataclass
class Check:
    requests: int
    errors: int  # 5xx
    p99_ms: float | None
    refused: int = 0  # 4xx

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def refusal_rate(self) -> float:
        return self.refused / self.requests if self.requests else 0.0


class PlanStore(Protocol):
    """Where a server's plan lives: a file (local), a ConfigMap (Kubernetes)."""

    def read(self) -> Plan: ...

    def write(self, plan: Plan) -> None: ...


@dataclass
class FilePlanStore:
    path: Path

    def read(self) -> Plan:
        return read_plan(self.path)

    def write(self, plan: Plan) -> None:
        write_plan(self.path, plan)


class ServerTarget:
    """A running model server (or the Service in front of its replicas): its address, where its
    plan lives, and its bearer token (if any)."""

    def __init__(
        self,
        base_url: str,
        plans: PlanStore | Path,
        token: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.plans = FilePlanStore(plans) if isinstance(plans, Path) else plans
        self.token = token
        self._http = client(self.base_url, transport=transport)

    def request(
        self, method: str, path: str, body: object = None, timeout: float = 10, smoke: bool = False
    ) -> tuple[int, bytes]:
        """One request; the status and body whatever the status. ConnectionError (an OSError)
        when no answer comes: nothing listens, or the connection broke. A `smoke` request is
        logged apart from production traffic (monitoring never judges it)."""
        try:
            headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
            if smoke:
                headers[TRAFFIC_HEADER] = SMOKE
            response = self._http.request(method, path, json=body, headers=headers, timeout=timeout)
        except httpx.TransportError as error:
            raise ConnectionError(f"{method} {self.base_url}{path}: {error!r}") from error
        return response.status_code, response.content

    def serving_version(self, model: str) -> str | None:
        """The version with the largest share now (aliases resolved by the server)."""
        status, body = self.request("GET", "/v1/models")
        if status != 200:
            raise DeployError(f"{self.base_url}/v1/models: HTTP {status}: {body[:200]!r}")
        routes = json.loads(body)["models"].get(model, {}).get("routes", [])
        return max(routes, key=lambda r: r["share"])["version"] if routes else None

    def apply(self, model: str, plan: ModelPlan, timeout: float = 180, agreeing: int = 3) -> None:
        """Write the model's plan and wait until the server serves exactly it (`agreeing`
        answers in a row, so every replica behind a Service has it)."""
        whole = self.plans.read().with_model(model, plan)
        self.plans.write(whole)
        wanted, streak = whole.digest(), 0

        def applied() -> bool:
            nonlocal streak
            status, body = self.request("GET", "/v1/models")
            if status != 200:
                return False
            state = json.loads(body)
            streak = streak + 1 if state["plan"] == wanted else 0
            if state["plan_error"] and state["plan"] != wanted:
                raise DeployError(f"the server refused the plan: {state['plan_error']}")
            return streak >= agreeing

        wait_for(
            applied,
            timeout=timeout,
            interval=0.1,
            what=f"the server at {self.base_url} did not apply plan {wanted}",
            error=DeployError,
        )

    def smoke(self, model: str, rows: list[dict], version: str | None = None) -> None:
        """Real requests, one row and a batch; every answer must be 200 with finite scores."""
        path = (
            f"/v1/models/{model}/predict"
            if version is None
            else f"/v1/models/{model}/versions/{version}/predict"
        )
        for body in (rows[0], rows):
            status, answer = self.request("POST", path, body, smoke=True)
            if status != 200:
                raise DeployError(
                    f"smoke test of {model} {version or ''}: HTTP {status}: {answer[:300]!r}"
                )
            predictions = json.loads(answer)["predictions"]
            expected = 1 if isinstance(body, dict) else len(rows)
            if len(predictions) != expected or not all(math.isfinite(p) for p in predictions):
                raise DeployError(f"smoke test of {model}: bad predictions {predictions[:5]}")

    def metrics(self) -> dict[tuple, float]:
        from prometheus_client.parser import text_string_to_metric_families

        status, body = self.request("GET", "/metrics")
        if status != 200:
            raise DeployError(f"{self.base_url}/metrics: HTTP {status}")
        samples = {}
        for family in text_string_to_metric_families(body.decode()):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples


def version_check(before: dict, after: dict, model: str, version: str) -> Check:
    """Requests, server errors and p99 latency of one version between two /metrics readings."""

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted({"model": model, "version": version, **labels}.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    codes = {dict(k[1]).get("code") for k in after if k[0] == "maestro_requests_total"}
    counts = {code: delta("maestro_requests_total", code=code) for code in codes if code}
    total = sum(counts.values())
    errors = sum(v for code, v in counts.items() if code.startswith("5"))
    refused = sum(v for code, v in counts.items() if code.startswith("4"))
    buckets = sorted(
        (
            float(dict(k[1])["le"]),
            delta("maestro_request_latency_seconds_bucket", le=dict(k[1])["le"]),
        )
        for k in after
        if k[0] == "maestro_request_latency_seconds_bucket"
        and dict(k[1]).get("model") == model
        and dict(k[1]).get("version") == version
    )
    observed = buckets[-1][1] if buckets else 0
    p99 = None
    if observed:
        p99 = next(le for le, count in buckets if count >= 0.99 * observed) * 1000
    return Check(int(total), int(errors), p99, int(refused))


def deploy(
    target: ServerTarget,
    model: str,
    version: str,
    strategy: str,
    rows: list[dict],
    latency_budget_ms: float,
    observe: Callable[[], None] | None = None,
    steps: tuple[int, ...] = CANARY_STEPS,
    say: Callable[[str], None] = print,
) -> dict:
    """Roll `version` of `model` out with `strategy`. On any failure the plan that served before
    is restored; a failed check raises DeployError (retrying the same version cannot help),
    anything else (the server unreachable, a bug) is raised as it is, so retries apply.
    `observe` runs while a canary step is watched (by default: the smoke rows, repeated, so the
    check has traffic to judge)."""
    if strategy not in STRATEGIES:
        raise BadInput(f"strategy {strategy!r}: choose one of {', '.join(STRATEGIES)}")
    stable = target.serving_version(model)
    say(f"{model}: deploying version {version} by {strategy} (serving now: {stable or 'nothing'})")
    try:
        if strategy == "rolling" or stable is None or stable == version:
            target.apply(model, ModelPlan((Route(version, 100),)))
            target.smoke(model, rows)
        elif strategy == "blue-green":
            target.apply(model, ModelPlan((Route(stable, 100), Route(version, 0))))
            target.smoke(model, rows, version=version)
            target.apply(model, ModelPlan((Route(version, 100), Route(stable, 0))))
            target.smoke(model, rows)
        else:
            for share in steps:
                routes = (
                    (Route(stable, 100 - share), Route(version, share))
                    if share < 100
                    else (Route(version, 100), Route(stable, 0))
                )
                target.apply(model, ModelPlan(routes))
                target.smoke(model, rows, version=version)
                if share < 100:
                    check, baseline = _watch(target, model, version, stable, rows, observe)
                    rate = canary_error_rate(check, baseline)
                    say(
                        f"{model}: canary at {share}%: {check.requests} requests, error rate "
                        f"{rate:.1%}, p99 {check.p99_ms} ms"
                    )
                    if rate > MAX_ERROR_RATE or (check.p99_ms or 0) > latency_budget_ms:
                        raise DeployError(
                            f"canary of {model} version {version} at {share}%: error rate "
                            f"{rate:.1%} (max {MAX_ERROR_RATE:.0%}), p99 {check.p99_ms} ms "
                            f"(budget {latency_budget_ms} ms)"
                        )
    except Exception as error:
        if stable is not None:
            target.apply(model, ModelPlan((Route(stable, 100),)))
            say(f"{model}: rolled back to version {stable}: {error}")
        raise
    return {"model": model, "version": version, "strategy": strategy, "previous": stable}


def canary_error_rate(canary: Check, stable: Check) -> float:
    """The canary's server errors, plus the requests it refused beyond what the stable version
    refuses of the same traffic (clients' bad requests are not the canary's fault)."""
    return canary.error_rate + max(0.0, canary.refusal_rate - stable.refusal_rate)


def _watch(
    target: ServerTarget, model: str, version: str, stable: str, rows: list[dict], observe: Any
) -> tuple[Check, Check]:
    before = target.metrics()
    if observe is not None:
        observe()
    else:
        for i in range(200):
            target.request("POST", f"/v1/models/{model}/predict", rows[i % len(rows)], smoke=True)
    after = target.metrics()
    return version_check(before, after, model, version), version_check(before, after, model, stable)


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
    from maestro import tracking
    from maestro.governance import registry
    from maestro.serving.scorer import example_rows
    from maestro.spec import get_spec

    spec = get_spec(model, settings)
    tracking.client(settings)
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
    probe = ServerTarget(url, settings.plan_path, settings.serving_token)
    if _answers(probe, "/health"):
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
        return _answers(probe, "/ready")

    what = f"the model server at {url} did not start; see {logs / 'serve.log'}"
    wait_for(ready, timeout=120, interval=0.5, what=what, error=DeployError)
    return url


def _answers(target: ServerTarget, path: str) -> bool:
    try:
        return target.request("GET", path, timeout=2)[0] == 200
    except OSError:
        return False


def requested_deployment(params: Mapping[str, Any], triggering_events: Mapping | None) -> dict:
    """What a deployment run is asked to do: the `version` param, else the champion named by
    the promotion's (or rollback's) asset event, else empty (the current champion)."""
    version = params["version"]
    for events in (triggering_events or {}).values():
        for event in events:
            version = version or str(event.extra.get("champion", ""))
    return {"version": version, "strategy": params["strategy"], "target": params["target"]}

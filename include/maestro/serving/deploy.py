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
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from maestro.errors import BadInput
from maestro.serving.plan import ModelPlan, Route, read_plan, write_plan

STRATEGIES = ("rolling", "blue-green", "canary")
CANARY_STEPS = (10, 50, 100)
MAX_ERROR_RATE = 0.01


class DeployError(RuntimeError):
    pass


@dataclass
class Check:
    requests: int
    errors: int
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


class ServerTarget:
    """A running model server: its address, its plan file and its bearer token (if any)."""

    def __init__(self, base_url: str, plan_path: Path, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.plan_path = plan_path
        self.token = token

    def request(
        self, method: str, path: str, body: object = None, timeout: float = 10
    ) -> tuple[int, bytes]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def serving_version(self, model: str) -> str | None:
        """The version with the largest share now (aliases resolved by the server)."""
        status, body = self.request("GET", "/v1/models")
        if status != 200:
            raise DeployError(f"{self.base_url}/v1/models: HTTP {status}: {body[:200]!r}")
        routes = json.loads(body)["models"].get(model, {}).get("routes", [])
        return max(routes, key=lambda r: r["share"])["version"] if routes else None

    def apply(self, model: str, plan: ModelPlan, timeout: float = 120) -> None:
        """Write the model's plan and wait until the server serves exactly it."""
        whole = read_plan(self.plan_path).with_model(model, plan)
        write_plan(self.plan_path, whole)
        wanted = whole.digest()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status, body = self.request("GET", "/v1/models")
            if status == 200:
                state = json.loads(body)
                if state["plan"] == wanted:
                    return
                if state["plan_error"]:
                    raise DeployError(f"the server refused the plan: {state['plan_error']}")
            time.sleep(0.2)
        raise DeployError(
            f"the server at {self.base_url} did not apply plan {wanted} in {timeout:.0f}s"
        )

    def smoke(self, model: str, rows: list[dict], version: str | None = None) -> None:
        """Real requests, one row and a batch; every answer must be 200 with finite scores."""
        path = (
            f"/v1/models/{model}/predict"
            if version is None
            else f"/v1/models/{model}/versions/{version}/predict"
        )
        for body in (rows[0], rows):
            status, answer = self.request("POST", path, body)
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

    def delta(name: str, **labels) -> float:
        key = (name, tuple(sorted({"model": model, "version": version, **labels}.items())))
        return after.get(key, 0.0) - before.get(key, 0.0)

    codes = {dict(k[1]).get("code") for k in after if k[0] == "maestro_requests_total"}
    counts = {code: delta("maestro_requests_total", code=code) for code in codes if code}
    total = sum(counts.values())
    errors = sum(v for code, v in counts.items() if code.startswith("5"))
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
    return Check(int(total), int(errors), p99)


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
    """Roll `version` of `model` out with `strategy`; on any failure restore the plan that
    served before and raise DeployError. `observe` runs while a canary step is watched (by
    default: the smoke rows, repeated, so the check has traffic to judge)."""
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
                    check = _watch(target, model, version, rows, observe)
                    say(
                        f"{model}: canary at {share}%: {check.requests} requests, {check.errors} errors, p99 {check.p99_ms} ms"
                    )
                    if check.error_rate > MAX_ERROR_RATE or (check.p99_ms or 0) > latency_budget_ms:
                        raise DeployError(
                            f"canary of {model} version {version} at {share}%: error rate "
                            f"{check.error_rate:.1%} (max {MAX_ERROR_RATE:.0%}), p99 {check.p99_ms} ms "
                            f"(budget {latency_budget_ms} ms)"
                        )
    except Exception as error:
        if stable is not None:
            target.apply(model, ModelPlan((Route(stable, 100),)))
            say(f"{model}: rolled back to version {stable}: {error}")
        raise DeployError(str(error)) from error
    return {"model": model, "version": version, "strategy": strategy, "previous": stable}


def _watch(target: ServerTarget, model: str, version: str, rows: list[dict], observe) -> Check:
    before = target.metrics()
    if observe is not None:
        observe()
    else:
        for i in range(200):
            target.request("POST", f"/v1/models/{model}/predict", rows[i % len(rows)])
    return version_check(before, target.metrics(), model, version)

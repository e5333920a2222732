"""A model server as a deployment sees it: its address, its bearer token and where its plan
lives (a file locally, a ConfigMap on Kubernetes); writing a plan and waiting until it serves,
smoke requests, and one version's requests, errors and p99 latency read from its /metrics."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import httpx

from maestro.errors import BadInput
from maestro.serving.catalogue import LATENCY_BUCKETS_EXPOSED, REQUESTS_EXPOSED
from maestro.serving.plan import ModelPlan, Plan, read_plan, write_plan
from maestro.vocabulary import SMOKE, TRAFFIC_HEADER
from maestro.waiting import wait_for
from maestro.web import client


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

    codes = {dict(k[1]).get("code") for k in after if k[0] == REQUESTS_EXPOSED}
    counts = {code: delta(REQUESTS_EXPOSED, code=code) for code in codes if code}
    total = sum(counts.values())
    errors = sum(v for code, v in counts.items() if code.startswith("5"))
    refused = sum(v for code, v in counts.items() if code.startswith("4"))
    buckets = sorted(
        (
            float(dict(k[1])["le"]),
            delta(LATENCY_BUCKETS_EXPOSED, le=dict(k[1])["le"]),
        )
        for k in after
        if k[0] == LATENCY_BUCKETS_EXPOSED
        and dict(k[1]).get("model") == model
        and dict(k[1]).get("version") == version
    )
    observed = buckets[-1][1] if buckets else 0
    p99 = None
    if observed:
        p99 = next(le for le, count in buckets if count >= 0.99 * observed) * 1000
    return Check(int(total), int(errors), p99, int(refused))

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

`target.ServerTarget` drives one server over HTTP and its plan: the local target, and what the
deployer pod does against the Service on Kubernetes; `rollout` runs a deployment end to end.
"""

from __future__ import annotations

from collections.abc import Callable

from maestro.deploy.target import Check, DeployError, ServerTarget, version_check
from maestro.errors import BadInput
from maestro.serving.plan import ModelPlan, Route
from maestro.vocabulary import STRATEGIES

CANARY_STEPS = (10, 50, 100)
MAX_ERROR_RATE = 0.01


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
    target: ServerTarget,
    model: str,
    version: str,
    stable: str,
    rows: list[dict],
    observe: Callable[[], None] | None,
) -> tuple[Check, Check]:
    before = target.metrics()
    if observe is not None:
        observe()
    else:
        for i in range(200):
            target.request("POST", f"/v1/models/{model}/predict", rows[i % len(rows)], smoke=True)
    after = target.metrics()
    return version_check(before, after, model, version), version_check(before, after, model, stable)

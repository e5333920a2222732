"""Which version answers a request: the serving plan applied as routing, and kept current.

A plan (`maestro.serving.plan`) names refs per model; the router resolves them in the registry,
loads each version's scorer once, binds its metric series, and switches to the new routing in
one assignment. The plan file is watched and re-read without a restart.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import logging
import random
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

from mlflow import MlflowClient

from maestro.config import Settings
from maestro.serving import metric_values, v2
from maestro.serving.catalogue import Metrics
from maestro.serving.plan import ModelPlan, Plan, PlanError, champion_plan, read_plan, write_plan
from maestro.serving.records import RequestError
from maestro.serving.scorer import Scorer, load_scorer
from maestro.spec import ModelSpec
from maestro.vocabulary import PRIMARY, SHADOW

log = logging.getLogger("maestro.serving")

PLAN_POLL_SECONDS = 0.5
RETRY_PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0)  # between tries of a plan that failed to apply


@dataclass
class Lane:
    """One version in a model's plan, with its metric children bound once."""

    scorer: Scorer
    share: float
    ok: Any = None
    latency: Any = None
    distribution: Any = None
    rows: Any = None
    classes: list[Any] | None = None  # multiclass: a counter per class, in the scores' order


@dataclass
class Routing:
    """A model's plan as lanes: the versions taking traffic by share, and the shadow."""

    plan: ModelPlan
    lanes: list[Lane]
    cumulative: list[float]
    shadow: Lane | None
    by_version: dict[str, Lane] = field(default_factory=dict)

    def pick(self) -> Lane:
        """A lane drawn by the traffic shares."""
        if len(self.lanes) == 1:
            return self.lanes[0]
        return self.lanes[
            bisect.bisect_right(self.cumulative, random.random() * self.cumulative[-1])
        ]


class Router:
    """The models served and how each request picks its version."""

    def __init__(self, settings: Settings, metrics: Metrics, models: list[str]) -> None:
        self.settings = settings
        self.metrics = metrics
        self.models: dict[str, Routing] = {}
        self.digest: str | None = None
        self.plan_error: str | None = None
        self._seen: bytes | None = None  # the digest of the plan file last read
        self._failures = 0  # tries in a row that failed to apply it
        self._retry_at: float | None = None  # when to try again after a failure
        self._scorers: dict[tuple[str, str], Scorer] = {}
        self._requested = models
        self._specs: dict[str, ModelSpec] = {}

    def initial_plan(self) -> Plan:
        """The plan file, plus a champion route for every named model it does not list yet."""
        plan = read_plan(self.settings.plan_path)
        missing = [m for m in self._requested if m not in plan.models]
        for model in missing:
            plan = plan.with_model(model, champion_plan())
        if missing or not self.settings.plan_path.exists():
            try:
                write_plan(self.settings.plan_path, plan)
            except OSError as error:  # a read-only ConfigMap mount: serve it, say so
                log.warning(
                    "serving plan not written back to %s: %s", self.settings.plan_path, error
                )
        return plan

    def apply(self, plan: Plan) -> None:
        """Load every version the plan needs, then switch to it in one assignment: requests in
        flight finish on the old routing, new ones take the new one."""
        from maestro import tracking

        mlc = tracking.client(self.settings)
        routing: dict[str, Routing] = {}
        for model, model_plan in plan.models.items():
            resolved = {ref: resolve(mlc, model, ref) for ref in model_plan.refs}
            for version in resolved.values():
                if (model, version) not in self._scorers:
                    self._scorers[(model, version)] = load_scorer(
                        model,
                        version,
                        self.settings.scoring_threads,
                        self.settings.compiled_forests,
                    )
            total = sum(r.weight for r in model_plan.routes)
            lanes = [
                self._lane(model, resolved[r.ref], r.weight / total) for r in model_plan.routes
            ]
            shadow = (
                self._lane(model, resolved[model_plan.shadow], 0.0) if model_plan.shadow else None
            )
            cumulative: list[float] = []
            running = 0.0
            for lane in lanes:
                running += lane.share
                cumulative.append(running)
            by_version = {
                lane.scorer.version: lane for lane in lanes + ([shadow] if shadow else [])
            }
            routing[model] = Routing(model_plan, lanes, cumulative, shadow, by_version)
        self.models = routing
        self.digest = plan.digest()
        self.plan_error = None
        live = {
            (m, lane.scorer.version) for m, r in routing.items() for lane in r.by_version.values()
        }
        self._scorers = {k: v for k, v in self._scorers.items() if k in live}
        self.metrics.forget(self.metrics.info)
        self.metrics.forget(self.metrics.pipeline_fallback)
        for model, r in routing.items():
            try:
                budget = self.spec(model).governance.latency_budget_ms / 1000
                self.metrics.latency_budget.labels(model).set(budget)
            except Exception as error:  # noqa: BLE001 - a model without a spec still serves
                log.warning("%s: no latency budget to export: %s", model, error)
            for lane in r.lanes:
                self.metrics.info.labels(model, lane.scorer.version, "serving").set(lane.share)
            if r.shadow:
                self.metrics.info.labels(model, r.shadow.scorer.version, SHADOW).set(0)
            for version, lane in r.by_version.items():
                fallback = 1 if lane.scorer.fallback else 0
                self.metrics.pipeline_fallback.labels(model, version).set(fallback)
        log.info("serving plan %s applied: %s", self.digest, self.describe()["models"])

    def _lane(self, model: str, version: str, share: float) -> Lane:
        scorer = self._scorers[(model, version)]
        m = self.metrics
        histogram = m.scores if scorer.classification else m.values
        classes = scorer.classes
        return Lane(
            scorer,
            share,
            ok=m.requests.labels(model, version, "200"),
            latency=m.latency.labels(model, version),
            distribution=histogram.labels(model, version),
            rows=m.rows.labels(model, version, PRIMARY if share > 0 else SHADOW),
            classes=None
            if classes is None
            else [m.classes.labels(model, version, c) for c in classes],
        )

    def reload_if_changed(self) -> bool:
        """Apply the plan file if it changed since last seen, or if applying it failed and its
        next try is due: a plan that cannot be applied (a bad plan, or the registry does not
        answer) is reported, tried again with growing pauses, and the current one serves on."""
        path = self.settings.plan_path
        try:
            seen = hashlib.sha256(path.read_bytes()).digest()  # a rewrite of the same size and
        except FileNotFoundError:  # time is a change too: the content decides
            return False
        changed = seen != self._seen
        if not changed and (self._retry_at is None or time.monotonic() < self._retry_at):
            return False
        if changed:
            self._failures = 0
        self._seen = seen
        try:
            self.apply(read_plan(path))
        except Exception as error:  # noqa: BLE001 - reported on /v1/models and in the log
            pause = RETRY_PAUSES[min(self._failures, len(RETRY_PAUSES) - 1)]
            self._failures += 1
            self._retry_at = time.monotonic() + pause
            self.plan_error = f"{type(error).__name__}: {error}"
            serving = "the previous one serves on" if self.models else "nothing is served yet"
            log.error(
                "serving plan in %s not applied (%s); %s; trying again in %.0f s",
                path,
                error,
                serving,
                pause,
            )
            return False
        self._failures, self._retry_at = 0, None
        return True

    def describe(self) -> dict:
        models = {}
        for name, r in self.models.items():
            models[name] = {
                "routes": [
                    {
                        "ref": route.ref,
                        "version": lane.scorer.version,
                        "share": round(lane.share, 6),
                        "path": lane.scorer.path,
                        "fallback": lane.scorer.fallback,
                        "compiled": lane.scorer.forest.state if lane.scorer.forest else None,
                    }
                    for route, lane in zip(r.plan.routes, r.lanes, strict=True)
                ],
                "shadow": r.shadow.scorer.version if r.shadow else None,
            }
        return {"plan": self.digest, "plan_error": self.plan_error, "models": models}

    def metadata(self, model: str, version: str | None = None) -> dict:
        """The Open Inference Protocol's model metadata: the versions in the plan (or the one
        asked for) and the inputs of the signature; RequestError 404 for what is not served."""
        routing = self.models.get(model)
        if routing is None:
            raise unknown_model(model)
        lanes = routing.by_version
        if version is not None and version not in lanes:
            raise RequestError(404, f"{model} version {version} is not in the serving plan")
        versions = [version] if version is not None else list(lanes)
        first = lanes[versions[0]].scorer
        return v2.model_metadata(model, versions, first.columns, first.classes)

    def spec(self, model: str) -> ModelSpec:
        from maestro.spec import get_spec

        if model not in self._specs:
            self._specs[model] = get_spec(model, self.settings)
        return self._specs[model]


def unknown_model(model: str) -> RequestError:
    """Which models are served is for holders of the token to ask (`/v1/models`)."""
    return RequestError(404, f"unknown model {model[:100]!r}")


def resolve(mlc: MlflowClient, model: str, ref: str) -> str:
    """The version number a plan's ref (a number or an alias) names."""
    if ref.isdigit():
        return ref
    try:
        return str(mlc.get_model_version_by_alias(model, ref).version)
    except Exception as error:  # noqa: BLE001 - MLflow raises its own exception types
        raise PlanError(f"{model}: alias {ref!r} does not resolve: {error}") from None


async def first_plan(router: Router) -> None:
    """Apply the plan before the server listens (whatever listens is sent requests, so it must
    have its models), trying again with a message while that fails (the registry does not
    answer, the plan is bad). SIGTERM or SIGINT meanwhile ends the wait at once: uvicorn's own
    handler is called too, and it stops without ever listening."""
    stop = threading.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    main = threading.current_thread() is threading.main_thread()  # else: no signals to take
    previous = {sig: signal.getsignal(sig) for sig in signals} if main else {}

    def on_signal(signum: int, frame: FrameType | None) -> None:
        handler = previous[signal.Signals(signum)]
        stop.set()
        if callable(handler):
            handler(signum, frame)

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        while not router.models and not stop.is_set():
            attempt = in_daemon_thread(router.reload_if_changed)
            while not attempt.done() and not stop.is_set():
                await asyncio.sleep(0.05)
            if not router.models:
                await asyncio.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def in_daemon_thread(call: Callable[[], Any]) -> asyncio.Future:
    """`call()` in a daemon thread: one blocked on an unanswering registry neither holds the
    event loop nor, as the default executor's threads would, the process's exit."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(outcome: BaseException | None, result: Any = None) -> None:
        if future.done():
            return
        if outcome is not None:
            future.set_exception(outcome)
        else:
            future.set_result(result)

    def run() -> None:
        try:
            result, outcome = call(), None
        except Exception as error:  # noqa: BLE001 - handed to the awaiting side
            result, outcome = None, error
        with contextlib.suppress(RuntimeError):  # the loop has closed: nobody waits
            loop.call_soon_threadsafe(settle, outcome, result)

    threading.Thread(target=run, daemon=True, name="first-plan").start()
    return future


async def watch(router: Router) -> None:
    """Re-read the plan file every half second (and write the buffered metric values)."""
    while True:
        await asyncio.to_thread(router.reload_if_changed)
        await asyncio.sleep(PLAN_POLL_SECONDS)
        if router.metrics.multiprocess:
            metric_values.write_all()

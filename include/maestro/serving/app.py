"""The model server: FastAPI on uvicorn, several models in one process, each routed by its
serving plan (canary weights, shadow, pinned versions), which it re-reads without a restart.

    maestro serve demo adult_income --port 8000

Scoring runs on the event loop itself: it takes well under a millisecond per row on the fast
path, less than a hop to a thread pool would cost.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import hashlib
import hmac
import itertools
import logging
import os
import random
import signal
import threading
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import cached_property
from importlib import metadata
from typing import Any

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from maestro.config import Settings
from maestro.serving import metric_values, v2
from maestro.serving.plan import ModelPlan, Plan, PlanError, champion_plan, read_plan, write_plan
from maestro.serving.predlog import Folders, PredictionLog, columns_body, known_requests
from maestro.serving.scorer import RequestError, Scorer, load_scorer, parse_json, to_columns
from maestro.vocabulary import SERVER_STOP_SECONDS, SMOKE, TRAFFIC_HEADER

log = logging.getLogger("maestro.serving")

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
VALUE_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
PLAN_POLL_SECONDS = 0.5
RECENT_IDS = 1_000_000
CLIENT_GONE = "client_disconnected"  # the reason a request that lost its client is counted under
WORKER_HANDOVER_SECONDS = 3.0  # a request another worker answered is in the log by then
RETRY_PAUSES = (1.0, 2.0, 5.0, 10.0, 30.0)  # between tries of a plan that failed to apply
LOG_BEHIND = RequestError(503, "the prediction log is behind: try again in a second")


class Metrics:
    def __init__(self, multiprocess: bool = False) -> None:
        self.multiprocess = multiprocess
        if multiprocess:
            metric_values.install()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "maestro_requests",
            "Prediction requests answered",
            ["model", "version", "code"],
            registry=r,
        )
        self.errors = Counter(
            "maestro_request_errors",
            "Refused or failed prediction requests",
            ["model", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "maestro_request_latency_seconds",
            "Time to answer a prediction request",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rows = Counter(
            "maestro_predicted_rows", "Rows scored", ["model", "version", "role"], registry=r
        )
        self.scores = Histogram(
            "maestro_prediction_score",
            "Predicted P(positive) of classifiers",
            ["model", "version"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.values = Histogram(
            "maestro_prediction_value",
            "Predicted values of regressors",
            ["model", "version"],
            buckets=VALUE_BUCKETS,
            registry=r,
        )
        self.info = Gauge(
            "maestro_model_version_info",
            "Versions in the serving plan and their traffic share",
            ["model", "version", "role"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.ready = Gauge(
            "maestro_server_ready",
            "1 when a serving plan is applied and models are loaded",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.plan_refused = Gauge(
            "maestro_serving_plan_refused",
            "1 while the newest serving plan is refused",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.latency_budget = Gauge(
            "maestro_latency_budget_seconds",
            "The spec's single-request latency budget",
            ["model"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.log_pending_rows = Gauge(
            "maestro_prediction_log_pending_rows",
            "Rows answered but not yet written: waiting in the server and read by its writer",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.log_pending_bytes = Gauge(
            "maestro_prediction_log_pending_bytes",
            "Bytes of the rows answered but not yet written",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.log_refused = Counter(
            "maestro_prediction_log_refused_requests",
            "Requests refused (503) because the prediction log's writer is behind its bounds",
            registry=r,
        )
        self.log_restarts = Gauge(
            "maestro_prediction_log_writer_restarts",
            "Prediction log writers that died and were replaced since the server started",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.log_written = Counter(
            "maestro_prediction_log_written_rows",
            "Rows the prediction log's writers wrote",
            registry=r,
        )
        self.log_failed_writes = Counter(
            "maestro_prediction_log_failed_writes",
            "Writes of the prediction log that failed (their entries are tried again)",
            registry=r,
        )
        self.log_dead_letter = Counter(
            "maestro_prediction_log_dead_letter_entries",
            "Entries no sink could hold, set aside in the dead-letter folder",
            registry=r,
        )
        self.labels = Counter(
            "maestro_feedback_labels", "Ground-truth labels accepted", ["model"], registry=r
        )
        self.labels_refused = Counter(
            "maestro_feedback_refused", "Ground-truth labels refused", ["model"], registry=r
        )
        self.pipeline_fallback = Gauge(
            "maestro_scoring_fallback",
            "1 for a version scored by its pipeline because its fast path was refused at load",
            ["model", "version"],
            multiprocess_mode="livemax",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: this process's, or with several workers,
        all of theirs (Prometheus' multiprocess mode: counters and histograms add up, each
        gauge combines as its `multiprocess_mode` says)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        metric_values.write_all()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def forget(self, gauge) -> None:
        """Drop a labelled gauge's series, as a new plan replaces the old one's versions.
        Multiprocess mode cannot remove a series: there they are set to 0."""
        if not self.multiprocess:
            gauge.clear()
            return
        for labels in list(gauge._metrics):  # prometheus_client's own record of the children
            gauge.labels(*labels).set(0)


@dataclass
class Lane:
    """One version in a model's plan, with its metric children bound once."""

    scorer: Scorer
    share: float
    ok: Any = None
    latency: Any = None
    distribution: Any = None
    rows: Any = None


@dataclass
class Routing:
    plan: ModelPlan
    lanes: list[Lane]
    cumulative: list[float]
    shadow: Lane | None
    by_version: dict[str, Lane] = field(default_factory=dict)

    def pick(self) -> Lane:
        if len(self.lanes) == 1:
            return self.lanes[0]
        return self.lanes[
            bisect.bisect_right(self.cumulative, random.random() * self.cumulative[-1])
        ]


@dataclass(frozen=True)
class Protocol:
    """How a prediction request arrives and how its errors are shaped."""

    name: str
    content_types: tuple[str, ...]

    def error(self, error: RequestError) -> dict:
        if self.name == "v2":  # the Open Inference Protocol's error object
            return {"error": error.message}
        body = {"error": error.message, "status": error.status}
        return body | {"field": error.field} if error.field else body


RECORDS = Protocol("records", ("application/json",))
# the V2 protocol's JSON, or its binary tensor extension (which some clients send untyped)
OPEN_INFERENCE = Protocol("v2", ("application/json", "application/octet-stream", ""))


@dataclass
class Read:
    """A request's features as validated columns, and what the prediction log keeps of them
    (`columns_body`: a third of the records' bytes, taken by the writer column by column)."""

    table: dict
    given: str | None = None  # the id an Open Inference Protocol request gave

    @cached_property
    def logged(self) -> bytes:  # made once, for the primary and the shadow; never with no log
        return columns_body(self.table)


class ModelServer:
    def __init__(self, settings: Settings, models: list[str] | None = None) -> None:
        self.settings = settings
        self.workers = settings.serving_workers or 1  # `serve` says how many there are
        self.metrics = Metrics(multiprocess=self.workers > 1)
        self.models: dict[str, Routing] = {}
        self.digest: str | None = None
        self.plan_error: str | None = None
        self._seen: bytes | None = None  # the digest of the plan file last read
        self._failures = 0  # tries in a row that failed to apply it
        self._retry_at: float | None = None  # when to try again after a failure
        self._scorers: dict[tuple[str, str], Scorer] = {}
        self._requested = models or []
        self._specs: dict = {}
        self._online: dict = {}  # model -> OnlineFeatures, made at its first entity request
        # (model, request id) answered lately and their row counts: feedback on them needs no
        # lookup (feedback names its model: a request of another model is unknown to it)
        self.recent: dict[tuple[str, str], int] = {}
        location = settings.prediction_log_location
        self.log = (
            PredictionLog(
                location,
                Folders.of(location, settings.home),
                settings.prediction_log_max_rows,
                settings.prediction_log_max_bytes,
                settings.prediction_log_drain_seconds,
            )
            if location != "off"
            else None
        )

    # plans -----------------------------------------------------------------
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
        routing = {}
        for model, model_plan in plan.models.items():
            resolved = {ref: _resolve(mlc, model, ref) for ref in model_plan.refs}
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
            cumulative, running = [], 0.0
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
                self.metrics.info.labels(model, r.shadow.scorer.version, "shadow").set(0)
            for version, lane in r.by_version.items():
                fallback = 1 if lane.scorer.fallback else 0
                self.metrics.pipeline_fallback.labels(model, version).set(fallback)
        log.info("serving plan %s applied: %s", self.digest, self.describe()["models"])

    def observe_state(self) -> None:
        """Gauges of the server's state, read when Prometheus scrapes."""
        m = self.metrics
        m.ready.set(1 if self.models else 0)
        m.plan_refused.set(1 if self.plan_error else 0)
        if self.log is not None:
            m.log_restarts.set(self.log.restarts)
            before = self.log.stats
            after = self.log.read_stats()
            m.log_pending_rows.set(self.log.waiting_rows + after.pending_rows)
            m.log_pending_bytes.set(self.log.waiting_bytes + after.pending_bytes)
            m.log_written.inc(after.written_rows - before.written_rows)
            m.log_failed_writes.inc(after.failed_writes - before.failed_writes)
            m.log_dead_letter.inc(after.dead_letter_entries - before.dead_letter_entries)

    def _lane(self, model: str, version: str, share: float) -> Lane:
        scorer = self._scorers[(model, version)]
        m = self.metrics
        histogram = m.scores if scorer.classification else m.values
        return Lane(
            scorer,
            share,
            ok=m.requests.labels(model, version, "200"),
            latency=m.latency.labels(model, version),
            distribution=histogram.labels(model, version),
            rows=m.rows.labels(model, version, "primary" if share > 0 else "shadow"),
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
            raise self.unknown_model(model)
        lanes = routing.by_version
        if version is not None and version not in lanes:
            raise RequestError(404, f"{model} version {version} is not in the serving plan")
        versions = [version] if version is not None else list(lanes)
        return v2.model_metadata(model, versions, lanes[versions[0]].scorer.columns)

    # requests ----------------------------------------------------------------
    def authorized(self, request: Request) -> bool:
        token = self.settings.serving_token
        if not token:
            return True
        given = request.headers.get("authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    async def body(self, request: Request, protocol: Protocol) -> bytes:
        """The body as received, within the size limit."""
        kind, *parameters = request.headers.get("content-type", "").lower().split(";")
        if kind.strip() not in protocol.content_types:
            raise RequestError(415, f"content type must be {protocol.content_types[0]}")
        for parameter in parameters:
            name, _, value = parameter.partition("=")
            if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
                raise RequestError(415, f"charset {value.strip()!r}: bodies are read as UTF-8")
        limit = self.settings.serving_max_body_bytes
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise RequestError(413, f"body of {length} bytes is over the limit of {limit}")
        chunks, size = [], 0
        async for chunk in request.stream():  # a body too slow is cut by the protocol (408)
            size += len(chunk)
            if size > limit:
                raise RequestError(413, f"body is over the limit of {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def records(self, request: Request) -> list:
        """The body's records."""
        raw = await self.body(request, RECORDS)
        body = parse_json(raw)
        records = [body] if isinstance(body, dict) else body
        if not isinstance(records, list):
            raise RequestError(422, "body must be a record (object) or a batch (array of objects)")
        if not records:
            raise RequestError(422, "empty batch: send at least one record")
        if len(records) > self.settings.serving_max_rows:
            raise RequestError(
                413,
                f"batch of {len(records)} records is over the limit of {self.settings.serving_max_rows}",
            )
        return records

    async def read(self, request: Request, model: str, lane: Lane, protocol: Protocol) -> Read:
        """A prediction request as validated columns, in either protocol."""
        if protocol is RECORDS:
            records = await self.records(request)
            if type(records[0]) is dict and len(records[0]) == 1:  # perhaps only entity keys
                records = await self.online_features(model, records)
            return Read(to_columns(records, lane.scorer.columns))
        raw = await self.body(request, protocol)
        table, given = v2.infer_request(
            raw,
            request.headers.get("inference-header-content-length"),
            lane.scorer.columns,
            self.settings.serving_max_rows,
        )
        return Read(table, given)

    async def predict(
        self,
        request: Request,
        model: str,
        version: str | None = None,
        protocol: Protocol | None = None,
    ) -> Response:
        """Score a request with the version the plan picks (or the one named), in the JSON
        records protocol or the Open Inference Protocol; shadow and log it."""
        protocol = protocol or RECORDS
        started = time.perf_counter()
        if not self.authorized(request):
            return self.refuse(model, RequestError(401, "missing or wrong bearer token"), protocol)
        routing = self.models.get(model)
        if routing is None:
            return self.refuse(model, self.unknown_model(model), protocol)
        if self.log is not None and self.log.full:  # back-pressure: nothing answered unlogged
            self.metrics.log_refused.inc()
            return self.refuse(model, LOG_BEHIND, protocol)
        lane = routing.pick() if version is None else routing.by_version.get(version)
        if lane is None:
            return self.refuse(
                model,
                RequestError(404, f"{model} version {version} is not in the serving plan"),
                protocol,
            )
        try:
            read = await self.read(request, model, lane, protocol)
            scores = lane.scorer.score(read.table)
        except RequestError as error:  # counted per version too: a canary may refuse more
            self.metrics.requests.labels(model, lane.scorer.version, str(error.status)).inc()
            return self.refuse(model, error, protocol)
        except ClientDisconnect:  # the client's doing, not the version's: no 5xx
            self.metrics.errors.labels(model, CLIENT_GONE).inc()
            return Response(status_code=499)
        except Exception:
            log.exception("%s version %s failed to score", model, lane.scorer.version)
            self.metrics.requests.labels(model, lane.scorer.version, "500").inc()
            self.metrics.errors.labels(model, "500").inc()
            failed = RequestError(500, "the model failed to score this request")
            return JSONResponse(
                protocol.error(failed) | {"version": lane.scorer.version}, status_code=500
            )
        elapsed = time.perf_counter() - started
        request_id = os.urandom(16).hex()  # 128 random bits; uuid4() costs 4x more
        lane.ok.inc()
        lane.latency.observe(elapsed)
        lane.rows.inc(len(scores))
        for value in scores[:100]:
            lane.distribution.observe(value)
        names = lane.scorer.names
        role = SMOKE if request.headers.get(TRAFFIC_HEADER) == SMOKE else "primary"
        self.log_scores(request_id, model, lane, role, elapsed, names, read, scores)
        self.remember(model, request_id, len(scores))
        if protocol is RECORDS:
            body = orjson.dumps(
                {
                    "model": model,
                    "version": lane.scorer.version,
                    "request_id": request_id,
                    "predictions": scores.tolist(),
                }
            )
        else:
            body = v2.infer_response(model, lane.scorer.version, request_id, read.given, scores)
        shadow = routing.shadow if version is None else None
        task = (
            BackgroundTask(self.score_shadow, shadow, model, read, names, request_id)
            if shadow
            else None
        )
        return Response(body, media_type="application/json", background=task)

    def remember(self, model: str, request_id: str, rows: int) -> None:
        self.recent[(model, request_id)] = rows
        if len(self.recent) > RECENT_IDS:  # forget the oldest tenth (dicts keep order)
            for key in list(itertools.islice(self.recent, RECENT_IDS // 10)):
                del self.recent[key]

    async def online_features(self, model: str, records: list) -> list:
        """A request that carries only entity keys (`{"customer_id": 17}`, or a list of them),
        completed from Feast's online store through the spec's feature service (the log holds
        the values used). Other requests pass unchanged."""
        from starlette.concurrency import run_in_threadpool

        from maestro.data.features import OnlineFeatures

        spec = self.spec(model)
        key = spec.entity.key
        if key in spec.feature_names or not all(
            type(r) is dict and r.keys() == {key} for r in records
        ):
            return records
        kind = int if spec.entity.type == "int" else str
        keys = [r[key] for r in records]
        for i, value in enumerate(keys):
            if type(value) is not kind:
                raise RequestError(
                    422, f"record {i}: field {key!r} must be {kind.__name__}, not {value!r}", key
                )
        if model not in self._online:
            self._online[model] = await run_in_threadpool(OnlineFeatures, spec, self.settings)
        try:
            rows = await run_in_threadpool(self._online[model].rows, keys)
        except LookupError as error:
            raise RequestError(404, str(error), key) from None
        except TimeoutError as error:  # stale: refused (see OnlineFeatures)
            raise RequestError(409, str(error), key) from None
        return rows

    def spec(self, model: str):
        from maestro.spec import get_spec

        if model not in self._specs:
            self._specs[model] = get_spec(model, self.settings)
        return self._specs[model]

    async def feedback(self, request: Request, model: str) -> Response:
        """Labels for earlier predictions: one `{"request_id", "label", "row"?}` or a list.
        Each is judged alone: refused ones are reported with the reason, the rest kept."""
        from maestro.monitoring import feedback

        if not self.authorized(request):
            return self.refuse(model, RequestError(401, "missing or wrong bearer token"))
        if model not in self.models:
            return self.refuse(model, self.unknown_model(model))
        try:
            records = await self.records(request)
        except RequestError as error:
            return self.refuse(model, error)
        spec = self.spec(model)
        accepted, refused, wanted = [], [], []
        for index, record in enumerate(records):
            problem = _feedback_problem(record, spec)
            if problem:
                refused.append(
                    feedback.Refusal(
                        index,
                        str(record.get("request_id", "")) if isinstance(record, dict) else "",
                        problem,
                    )
                )
                continue
            wanted.append((index, record))
        unknown = sorted(
            {r["request_id"] for _, r in wanted if (model, r["request_id"]) not in self.recent}
        )
        logged = await self.logged_requests(model, unknown)
        for index, record in wanted:
            request_id, row = record["request_id"], record.get("row", 0)
            rows = self.recent.get((model, request_id), logged.get(request_id))
            if rows is None:
                refused.append(
                    feedback.Refusal(
                        index, request_id, f"unknown request_id {request_id!r} for {model}"
                    )
                )
            elif row >= rows:
                refused.append(
                    feedback.Refusal(
                        index,
                        request_id,
                        f"row {row} is out of range: request {request_id} scored {rows} rows",
                    )
                )
            else:
                label = feedback.parse_label(record["label"], spec)
                accepted.append({"request_id": request_id, "row": row, "label": label})
        import pandas as pd

        stored = await asyncio.to_thread(
            feedback.store, self.settings, model, pd.DataFrame(accepted)
        )
        self.metrics.labels.labels(model).inc(stored)
        self.metrics.labels_refused.labels(model).inc(len(refused))
        body = {
            "model": model,
            "accepted": stored,
            "refused": [
                {"index": r.index, "request_id": r.key, "reason": r.reason}
                for r in sorted(refused, key=lambda r: r.index)
            ],
        }
        if stored:
            status = 200
        elif all(r.reason.startswith("unknown request_id") for r in refused):
            status = 404
        else:
            status = 422
        return JSONResponse(body, status_code=status)

    async def logged_requests(self, model: str, ids: list[str]) -> dict[str, int]:
        """Row counts of requests this process did not answer lately, from the prediction log.
        Another worker's requests reach the log when its writer next writes (every second),
        so with several workers the ids not found yet are looked for a little longer."""
        if not ids or self.log is None:
            return {}
        location = self.settings.prediction_log_location
        found = await asyncio.to_thread(known_requests, location, model, ids)
        deadline = time.monotonic() + (WORKER_HANDOVER_SECONDS if self.workers > 1 else 0)
        while len(found) < len(ids) and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            missing = [i for i in ids if i not in found]
            found |= await asyncio.to_thread(known_requests, location, model, missing)
        return found

    def score_shadow(
        self, lane: Lane, model: str, read: Read, names: tuple, request_id: str
    ) -> None:
        """Score with the shadow version after the answer has gone; `read` is the request as
        the primary version validated it."""
        started = time.perf_counter()
        try:
            scores = lane.scorer.score(read.table)
        except Exception:
            log.exception("shadow %s version %s failed to score", model, lane.scorer.version)
            self.metrics.errors.labels(model, "shadow").inc()
            return
        elapsed = time.perf_counter() - started
        lane.rows.inc(len(scores))
        self.log_scores(request_id, model, lane, "shadow", elapsed, names, read, scores)

    def log_scores(
        self,
        request_id: str,
        model: str,
        lane: Lane,
        role: str,
        elapsed: float,
        names: tuple,
        read: Read,
        scores: np.ndarray,
    ) -> None:
        if self.log is not None:
            version = lane.scorer.version
            self.log.append(
                time.time(),
                request_id,
                model,
                version,
                role,
                elapsed * 1000,
                names,
                read.logged,
                scores.tobytes(),
                "columns",
            )

    def refuse(
        self, model: str, error: RequestError, protocol: Protocol | None = None
    ) -> JSONResponse:
        """The error answer, counted under the model's name when it is served (any other name
        a client makes up is counted as `-`: series stay bounded)."""
        self.metrics.errors.labels(model if model in self.models else "-", str(error.status)).inc()
        headers = {"Retry-After": "1"} if error.status == 503 else None
        return JSONResponse(
            (protocol or RECORDS).error(error), status_code=error.status, headers=headers
        )

    def unknown_model(self, model: str) -> RequestError:
        """Which models are served is for holders of the token to ask (`/v1/models`)."""
        return RequestError(404, f"unknown model {model[:100]!r}")


def _feedback_problem(record, spec) -> str | None:
    """Why one feedback record cannot be taken, or None."""
    from maestro.monitoring.feedback import parse_label

    if not isinstance(record, dict):
        return "each label must be an object with request_id and label"
    unknown = sorted(set(record) - {"request_id", "label", "row"})
    if unknown:
        return f"unknown fields {unknown} (expected request_id, label and optionally row)"
    if not isinstance(record.get("request_id"), str) or not record["request_id"]:
        return "request_id must be a non-empty string"
    if "label" not in record:
        return "label is missing"
    row = record.get("row", 0)
    if isinstance(row, bool) or not isinstance(row, int) or row < 0:
        return f"row must be a whole number from 0, got {row!r}"
    try:
        parse_label(record["label"], spec)
    except ValueError as error:
        return str(error)
    return None


def _resolve(mlc, model: str, ref: str) -> str:
    if ref.isdigit():
        return ref
    try:
        return str(mlc.get_model_version_by_alias(model, ref).version)
    except Exception as error:  # noqa: BLE001 - MLflow raises its own exception types
        raise PlanError(f"{model}: alias {ref!r} does not resolve: {error}") from None


def create_app(settings: Settings, models: list[str] | None = None) -> FastAPI:
    settings.require_secrets("the model server", serving_token=settings.serving_token)
    server = ModelServer(settings, models)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not settings.serving_token:
            log.warning(
                "no MAESTRO_SERVING_TOKEN configured: the server is open to anyone who reaches it"
            )
        try:
            await asyncio.to_thread(server.initial_plan)
        except Exception as error:  # noqa: BLE001 - the tries below say why, and go on
            log.error("serving plan not written at start: %s", error)
        await _first_plan(server)
        watcher = asyncio.create_task(_watch(server))
        yield
        watcher.cancel()
        if server.log is not None:
            server.log.close()
        if server.metrics.multiprocess:  # its counts stay; its live gauges go with it
            from prometheus_client import multiprocess

            metric_values.write_all()
            multiprocess.mark_process_dead(os.getpid())

    app = FastAPI(title="Maestro model server", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.server = server

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/ready")
    async def ready(request: Request) -> JSONResponse:
        """Open to probes; what the plan is and why it failed (it names models) only to
        holders of the token."""
        ok = bool(server.models)
        body: dict = {"ready": ok}
        if server.authorized(request):
            body |= {"plan": server.digest, "plan_error": server.plan_error}
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Behind the token too: the series name every model and version served."""
        if not server.authorized(request):
            return server.refuse("-", RequestError(401, "missing or wrong bearer token"))
        server.observe_state()
        return Response(server.metrics.exposition(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models_(request: Request) -> JSONResponse:
        if not server.authorized(request):
            return server.refuse("-", RequestError(401, "missing or wrong bearer token"))
        return JSONResponse(server.describe())

    async def predict(request: Request) -> Response:
        return await server.predict(request, request.path_params["model"])

    async def predict_version(request: Request) -> Response:
        """Score with one version of the plan directly (a blue-green smoke test of a version
        that has no traffic yet)."""
        params = request.path_params
        return await server.predict(request, params["model"], params["version"])

    async def feedback(request: Request) -> Response:
        return await server.feedback(request, request.path_params["model"])

    # the Open Inference Protocol (KServe V2) beside the JSON routes
    @app.get("/v2")
    async def v2_server() -> dict:
        return {"name": "maestro", "version": metadata.version("maestro-ml"), "extensions": []}

    @app.get("/v2/health/live")
    async def v2_live() -> dict:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def v2_ready() -> JSONResponse:
        ok = bool(server.models)
        return JSONResponse({"ready": ok}, status_code=200 if ok else 503)

    async def v2_metadata(request: Request) -> JSONResponse:
        params = request.path_params
        if not server.authorized(request):
            error = RequestError(401, "missing or wrong bearer token")
            return server.refuse(params["model"], error, OPEN_INFERENCE)
        try:
            return JSONResponse(server.metadata(params["model"], params.get("version")))
        except RequestError as error:
            return server.refuse(params["model"], error, OPEN_INFERENCE)

    async def v2_model_ready(request: Request) -> JSONResponse:
        params = request.path_params
        if not server.authorized(request):
            error = RequestError(401, "missing or wrong bearer token")
            return server.refuse(params["model"], error, OPEN_INFERENCE)
        try:
            server.metadata(params["model"], params.get("version"))
        except RequestError as error:
            return server.refuse(params["model"], error, OPEN_INFERENCE)
        return JSONResponse({"name": params["model"], "ready": True})

    async def v2_infer(request: Request) -> Response:
        params = request.path_params
        return await server.predict(request, params["model"], params.get("version"), OPEN_INFERENCE)

    for prefix in ("/v2/models/{model}", "/v2/models/{model}/versions/{version}"):
        app.add_route(prefix, v2_metadata, methods=["GET"])
        app.add_route(f"{prefix}/ready", v2_model_ready, methods=["GET"])
        app.add_route(f"{prefix}/infer", v2_infer, methods=["POST"])

    app.add_route("/v1/models/{model}/feedback", feedback, methods=["POST"])
    # plain Starlette routes: they take the raw request, so FastAPI's per-request dependency
    # solving has nothing to do but costs about a tenth of a single-row request
    app.add_route("/v1/models/{model}/predict", predict, methods=["POST"])
    app.add_route("/v1/models/{model}/versions/{version}/predict", predict_version, ["POST"])
    return app


async def _first_plan(server: ModelServer) -> None:
    """Apply the plan before the server listens (whatever listens is sent requests, so it must
    have its models), trying again with a message while that fails (the registry does not
    answer, the plan is bad). SIGTERM or SIGINT meanwhile ends the wait at once: uvicorn's own
    handler is called too, and it stops without ever listening."""
    stop = threading.Event()
    signals = (signal.SIGTERM, signal.SIGINT)
    main = threading.current_thread() is threading.main_thread()  # else: no signals to take
    previous = {sig: signal.getsignal(sig) for sig in signals} if main else {}

    def on_signal(signum: int, frame) -> None:
        stop.set()
        if callable(previous[signum]):
            previous[signum](signum, frame)

    for sig in previous:
        signal.signal(sig, on_signal)
    try:
        while not server.models and not stop.is_set():
            attempt = _in_daemon_thread(server.reload_if_changed)
            while not attempt.done() and not stop.is_set():
                await asyncio.sleep(0.05)
            if not server.models:
                await asyncio.sleep(0.2)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _in_daemon_thread(call) -> asyncio.Future:
    """`call()` in a daemon thread: one blocked on an unanswering registry neither holds the
    event loop nor, as the default executor's threads would, the process's exit."""
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def settle(outcome: BaseException | None, result=None) -> None:
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


async def _watch(server: ModelServer) -> None:
    while True:
        await asyncio.to_thread(server.reload_if_changed)
        await asyncio.sleep(PLAN_POLL_SECONDS)
        if server.metrics.multiprocess:
            metric_values.write_all()


MODELS_VARIABLE = "MAESTRO_SERVING_MODELS"


def app_from_environment() -> FastAPI:
    """The app of one of `maestro serve --workers N`'s processes (`maestro.serving.workers`
    starts each one fresh); the settings and models come from the environment `serve` set."""
    from maestro.config import get_settings

    models = [m for m in os.environ.get(MODELS_VARIABLE, "").split(",") if m]
    return create_app(get_settings(), models)


def serve(
    settings: Settings, models: list[str], host: str, port: int, workers: int | None = None
) -> None:
    """Serve on `host:port` with `workers` processes (default: the settings', else the CPUs).
    Each worker loads the plan, watches it and keeps its own prediction log writer; see
    `maestro.serving.workers` for how they share the port."""
    import sys
    import tempfile

    import uvicorn

    from maestro.serving.workers import supervise

    # a registry that does not answer fails a try at once, and the plan's watcher says so
    # and tries again (MLflow's own retries would hold each try for minutes, silently)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # LightGBM's OpenMP threads sleep between batches instead of spinning on the cores the
    # event loop and the prediction log's writer need (read when the runtime loads, later)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    # threads beside the event loop (shadow scoring, the prediction log's feeder) must not
    # hold it for Python's default 5 ms GIL slice: hand the interpreter back every 0.5 ms
    sys.setswitchinterval(0.0005)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    workers = workers or settings.server_processes
    options = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "maestro.serving.http:OneWriteProtocol",  # httptools, one write per answer
        "access_log": False,
        "log_level": "warning",
        # requests in flight take milliseconds; then the prediction log drains (its own bound)
        "timeout_graceful_shutdown": SERVER_STOP_SECONDS,
    }
    if workers == 1:
        one = settings.model_copy(update={"serving_workers": 1})
        uvicorn.run(create_app(one, models), workers=1, **options)
        return
    with tempfile.TemporaryDirectory(prefix="maestro-metrics-") as metrics:
        os.environ.update(
            {
                MODELS_VARIABLE: ",".join(models),
                "MAESTRO_SERVING_WORKERS": str(workers),
                "PROMETHEUS_MULTIPROC_DIR": metrics,
            }
        )
        log.info("serving on %s:%d with %d worker processes", host, port, workers)
        supervise(options, workers)

"""Scoring one prediction request, in either protocol: the version the plan picks (or the one
named) scores the validated columns, the answer goes, the shadow scores after it, and both are
logged. The JSON and the V2 routes call `predict`.

Scoring runs on the event loop itself: it takes well under a millisecond per row on the fast
path, less than a hop to a thread pool would cost.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.background import BackgroundTask
from starlette.requests import ClientDisconnect

from maestro.models import predicted_labels
from maestro.serving import v2
from maestro.serving.deps import RECORDS, Protocol, authorized, body, records, refuse, unauthorized
from maestro.serving.log_pipe import columns_body
from maestro.serving.records import RequestError, to_columns
from maestro.serving.routing import Lane, unknown_model
from maestro.serving.server import ModelServer
from maestro.vocabulary import PRIMARY, SHADOW, SMOKE, TRAFFIC_HEADER

if TYPE_CHECKING:
    from opentelemetry.trace import Span

log = logging.getLogger("maestro.serving")

CLIENT_GONE = "client_disconnected"  # the reason a request that lost its client is counted under
CLIENT_CLOSED_REQUEST = 499  # nginx's status for a client that left before the answer


def log_behind() -> RequestError:
    return RequestError(503, "the prediction log is behind: try again in a second")


@dataclass
class Read:
    """A request's features as validated columns, and what the prediction log keeps of them
    (`columns_body`: a third of the records' bytes, taken by the writer column by column)."""

    table: dict
    given: str | None = None  # the id an Open Inference Protocol request gave

    @cached_property
    def logged(self) -> bytes:  # made once, for the primary and the shadow; never with no log
        return columns_body(self.table)


async def read(
    server: ModelServer, request: Request, model: str, lane: Lane, protocol: Protocol
) -> Read:
    """A prediction request as validated columns, in either protocol."""
    if protocol is RECORDS:
        found = await records(server, request)
        if type(found[0]) is dict and len(found[0]) == 1:  # perhaps only entity keys
            found = await server.online.complete(server.router.spec(model), found)
        return Read(to_columns(found, lane.scorer.columns))
    raw = await body(server, request, protocol)
    table, given = v2.infer_request(
        raw,
        request.headers.get("inference-header-content-length"),
        lane.scorer.columns,
        server.settings.serving_max_rows,
        v2.output_names(lane.scorer.classes),
    )
    return Read(table, given)


async def predict(
    server: ModelServer,
    request: Request,
    route: str,
    model: str,
    version: str | None = None,
    protocol: Protocol = RECORDS,
) -> Response:
    """Score a request with the version the plan picks (or the one named), in the JSON
    records protocol or the Open Inference Protocol; shadow and log it; trace it when the
    server traces (`route` is the path's template, the span's name)."""
    if server.tracing is None:
        return await score(server, request, model, version, protocol, None)
    span = server.tracing.start(request.headers, request.method, route, model)
    try:
        response = await score(server, request, model, version, protocol, span)
        span.set_attribute("http.response.status_code", response.status_code)
        if response.status_code >= 500:
            from opentelemetry.trace import StatusCode

            span.set_status(StatusCode.ERROR)
        return response
    finally:
        span.end()


async def score(
    server: ModelServer,
    request: Request,
    model: str,
    version: str | None,
    protocol: Protocol,
    span: Span | None,
) -> Response:
    started = time.perf_counter()
    if not authorized(server, request):
        return refuse(server, model, unauthorized(), protocol)
    routing = server.router.models.get(model)
    if routing is None:
        return refuse(server, model, unknown_model(model), protocol)
    if server.log is not None and server.log.full:  # back-pressure: nothing answered unlogged
        server.metrics.log_refused.inc()
        return refuse(server, model, log_behind(), protocol)
    lane = routing.pick() if version is None else routing.by_version.get(version)
    if lane is None:
        missing = RequestError(404, f"{model} version {version} is not in the serving plan")
        return refuse(server, model, missing, protocol)
    metrics = server.metrics
    try:
        features = await read(server, request, model, lane, protocol)
        scores = lane.scorer.score(features.table)
    except RequestError as error:  # counted per version too: a canary may refuse more
        metrics.requests.labels(model, lane.scorer.version, str(error.status)).inc()
        if span is not None:
            span.set_attribute("maestro.model_version", lane.scorer.version)
        return refuse(server, model, error, protocol)
    except ClientDisconnect:  # the client's doing, not the version's: no 5xx
        metrics.errors.labels(model, CLIENT_GONE).inc()
        return Response(status_code=CLIENT_CLOSED_REQUEST)
    except Exception:
        log.exception("%s version %s failed to score", model, lane.scorer.version)
        metrics.requests.labels(model, lane.scorer.version, "500").inc()
        metrics.errors.labels(model, "500").inc()
        failed = RequestError(500, "the model failed to score this request")
        return JSONResponse(
            protocol.error(failed) | {"version": lane.scorer.version}, status_code=500
        )
    elapsed = time.perf_counter() - started
    request_id = os.urandom(16).hex()  # 128 random bits; uuid4() costs 4x more
    classes = lane.scorer.classes
    lane.ok.inc()
    lane.latency.observe(elapsed)
    lane.rows.inc(len(scores))
    for value in scores[:100] if classes is None else scores[:100].max(axis=1):
        lane.distribution.observe(value)  # multiclass: the top class's probability
    if lane.classes is not None:
        predicted = np.bincount(scores.argmax(axis=1), minlength=len(lane.classes))
        for counter, rows in zip(lane.classes, predicted.tolist(), strict=True):
            if rows:
                counter.inc(rows)
    names = lane.scorer.names
    role = SMOKE if request.headers.get(TRAFFIC_HEADER) == SMOKE else PRIMARY
    log_scores(server, request_id, model, lane, role, elapsed, names, features, scores)
    server.remember(model, request_id, len(scores))
    if span is not None:
        span.set_attributes(
            {
                "maestro.model_version": lane.scorer.version,
                "maestro.rows": len(scores),
                "maestro.request_id": request_id,
            }
        )
    if protocol is RECORDS:
        answer = orjson.dumps(
            {
                "model": model,
                "version": lane.scorer.version,
                "request_id": request_id,
                **records_answer(scores, classes),
            }
        )
    else:
        answer = v2.infer_response(
            model, lane.scorer.version, request_id, features.given, scores, classes
        )
    shadow = routing.shadow if version is None else None
    task = (
        BackgroundTask(score_shadow, server, shadow, model, features, names, request_id)
        if shadow
        else None
    )
    return Response(answer, media_type="application/json", background=task)


def records_answer(scores: np.ndarray, classes: list[str] | None) -> dict:
    """The predictions of the JSON protocol: one number per row; a multiclass model's are
    labels, with each row's probability of every class beside them."""
    if classes is None:
        return {"predictions": scores.tolist()}
    return {
        "predictions": predicted_labels(scores, classes),
        "probabilities": [dict(zip(classes, row, strict=True)) for row in scores.tolist()],
    }


def logged_predictions(scores: np.ndarray, classes: list[str] | None) -> bytes:
    """What the prediction log keeps per row: the score (binary, regression) or, multiclass,
    the predicted class's index into the version's classes."""
    if classes is None:
        return scores.tobytes()
    return scores.argmax(axis=1).astype(np.float64).tobytes()


def score_shadow(
    server: ModelServer, lane: Lane, model: str, features: Read, names: tuple, request_id: str
) -> None:
    """Score with the shadow version after the answer has gone; `features` is the request as
    the primary version validated it."""
    started = time.perf_counter()
    try:
        scores = lane.scorer.score(features.table)
    except Exception:
        log.exception("shadow %s version %s failed to score", model, lane.scorer.version)
        server.metrics.errors.labels(model, SHADOW).inc()
        return
    elapsed = time.perf_counter() - started
    lane.rows.inc(len(scores))
    log_scores(server, request_id, model, lane, SHADOW, elapsed, names, features, scores)


def log_scores(
    server: ModelServer,
    request_id: str,
    model: str,
    lane: Lane,
    role: str,
    elapsed: float,
    names: tuple,
    features: Read,
    scores: np.ndarray,
) -> None:
    if server.log is not None:
        server.log.append(
            time.time(),
            request_id,
            model,
            lane.scorer.version,
            role,
            elapsed * 1000,
            names,
            features.logged,
            logged_predictions(scores, lane.scorer.classes),
            "columns",
        )

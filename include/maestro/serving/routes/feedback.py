"""Ground-truth labels for earlier predictions, by request id (and row within a batch)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from maestro.logs import labels
from maestro.logs.predictions import known_requests
from maestro.serving.deps import REFUSED, Refusal, TokenHolder, records
from maestro.serving.routing import unknown_model
from maestro.serving.server import ModelServer
from maestro.spec import ModelSpec

WORKER_HANDOVER_SECONDS = 3.0  # a request another worker answered is in the log by then

router = APIRouter(prefix="/v1/models", tags=["feedback"], responses=REFUSED)


class Refused(BaseModel):
    index: int  # the label's place in what was sent
    request_id: str
    reason: str


class FeedbackResult(BaseModel):
    """What was kept, and each label refused with its reason (404: every request unknown)."""

    model: str
    accepted: int
    refused: list[Refused]


LABEL = {
    "type": "object",
    "properties": {
        "request_id": {"type": "string", "minLength": 1},
        "label": {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]},
        "row": {"type": "integer", "minimum": 0},
    },
    "required": ["request_id", "label"],
    "additionalProperties": False,
}
# the body is read raw (as a prediction's is): its schema is declared for the document alone
LABELS_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {"oneOf": [LABEL, {"type": "array", "items": LABEL, "minItems": 1}]}
        }
    },
}
JUDGED = {"model": FeedbackResult | Refusal, "content": {"application/json": {}}}


@router.post(
    "/{model}/feedback",
    response_model=FeedbackResult,
    responses={404: JUDGED, 422: JUDGED},
    openapi_extra={"requestBody": LABELS_BODY},
)
async def create_feedback(model: str, request: Request, server: TokenHolder) -> JSONResponse:
    """Labels for earlier predictions: one `{"request_id", "label", "row"?}` or a list. Each is
    judged alone: refused ones are reported with the reason, the rest kept."""
    if model not in server.router.models:
        raise unknown_model(model)
    given = await records(server, request)
    spec = server.router.spec(model)
    accepted, refused, wanted = [], [], []
    for index, record in enumerate(given):
        problem = _problem(record, spec)
        if problem:
            key = str(record.get("request_id", "")) if isinstance(record, dict) else ""
            refused.append(labels.Refusal(index, key, problem))
            continue
        wanted.append((index, record))
    unknown = sorted(
        {r["request_id"] for _, r in wanted if (model, r["request_id"]) not in server.recent}
    )
    logged = await _logged_requests(server, model, unknown)
    for index, record in wanted:
        request_id, row = record["request_id"], record.get("row", 0)
        rows = server.recent.get((model, request_id), logged.get(request_id))
        if rows is None:
            reason = f"unknown request_id {request_id!r} for {model}"
            refused.append(labels.Refusal(index, request_id, reason))
        elif row >= rows:
            reason = f"row {row} is out of range: request {request_id} scored {rows} rows"
            refused.append(labels.Refusal(index, request_id, reason))
        else:
            label = labels.parse_label(record["label"], spec)
            accepted.append({"request_id": request_id, "row": row, "label": label})
    import pandas as pd

    stored = await asyncio.to_thread(
        labels.store_labels, server.settings, model, pd.DataFrame(accepted)
    )
    server.metrics.labels.labels(model).inc(stored)
    server.metrics.labels_refused.labels(model).inc(len(refused))
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


def _problem(record: Any, spec: ModelSpec) -> str | None:
    """Why one feedback record cannot be taken, or None."""
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
        labels.parse_label(record["label"], spec)
    except ValueError as error:
        return str(error)
    return None


async def _logged_requests(server: ModelServer, model: str, ids: list[str]) -> dict[str, int]:
    """Row counts of requests this process did not answer lately, from the prediction log.
    Another worker's requests reach the log when its writer next writes (every second), so
    with several workers the ids not found yet are looked for a little longer."""
    if not ids or server.log is None:
        return {}
    location = server.settings.prediction_log_location
    found = await asyncio.to_thread(known_requests, location, model, ids)
    deadline = time.monotonic() + (WORKER_HANDOVER_SECONDS if server.workers > 1 else 0)
    while len(found) < len(ids) and time.monotonic() < deadline:
        await asyncio.sleep(0.25)
        missing = [i for i in ids if i not in found]
        found |= await asyncio.to_thread(known_requests, location, model, missing)
    return found

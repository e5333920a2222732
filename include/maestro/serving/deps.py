"""What every route of the model server depends on: the running server, the bearer token, the
body within its limits, and the one shape of a refusal (per protocol, counted per model)."""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from maestro.serving.records import RequestError, parse_json
from maestro.serving.server import ModelServer


class Refusal(BaseModel):
    """Every refusal's body: what is wrong, the status, and the field when one is to blame
    (the Open Inference Protocol's routes send `error` alone)."""

    error: str
    status: int | None = None
    field: str | None = None


REFUSALS = {
    400: "the body is not valid JSON",
    401: "missing or wrong bearer token",
    404: "the model or version is not served",
    413: "the body or the batch is over its limit",
    415: "not JSON (or not UTF-8)",
    422: "a record, tensor or label the model refuses",
    503: "the prediction log is behind (Retry-After)",
}
# what FastAPI documents of a route's refusals (`APIRouter(responses=...)`)
REFUSED: dict[int | str, dict[str, Any]] = {
    # JSON whatever the route's own media type (a refusal of /metrics too)
    status: {"model": Refusal, "description": why, "content": {"application/json": {}}}
    for status, why in REFUSALS.items()
}


def unauthorized() -> RequestError:
    return RequestError(401, "missing or wrong bearer token")


@dataclass(frozen=True)
class Protocol:
    """How a prediction request arrives and how its errors are shaped."""

    name: str
    content_types: tuple[str, ...]

    def error(self, error: RequestError) -> dict:
        if self.name == "v2":  # the Open Inference Protocol's error object
            return {"error": error.message}
        body: dict[str, Any] = {"error": error.message, "status": error.status}
        return body | {"field": error.field} if error.field else body


RECORDS = Protocol("records", ("application/json",))
# the V2 protocol's JSON, or its binary tensor extension (which some clients send untyped)
OPEN_INFERENCE = Protocol("v2", ("application/json", "application/octet-stream", ""))


def server_of(request: Request) -> ModelServer:
    """The server the app's lifespan made (it exists only while the app runs)."""
    server: ModelServer = request.app.state.server
    return server


def authorized(server: ModelServer, request: Request) -> bool:
    token = server.settings.serving_token
    if not token:
        return True
    given = request.headers.get("authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def require_token(request: Request) -> ModelServer:
    """A FastAPI dependency: the server, for a holder of the token (else a 401 refusal)."""
    server = server_of(request)
    if not authorized(server, request):
        raise unauthorized()
    return server


Server = Annotated[ModelServer, Depends(server_of)]
TokenHolder = Annotated[ModelServer, Depends(require_token)]


def refuse(
    server: ModelServer, model: str, error: RequestError, protocol: Protocol = RECORDS
) -> JSONResponse:
    """The error answer, counted under the model's name when it is served (any other name
    a client makes up is counted as `-`: series stay bounded)."""
    served = model if model in server.router.models else "-"
    server.metrics.errors.labels(served, str(error.status)).inc()
    headers = {"Retry-After": "1"} if error.status == 503 else None
    return JSONResponse(protocol.error(error), status_code=error.status, headers=headers)


async def refusal_of(request: Request, error: Exception) -> JSONResponse:
    """The exception handler for a RequestError a route or dependency raised: shaped by the
    protocol its path belongs to, counted under the model it names."""
    assert isinstance(error, RequestError)  # nosec B101 - registered for RequestError only
    protocol = OPEN_INFERENCE if request.url.path.startswith("/v2") else RECORDS
    model = request.path_params.get("model", "-")
    return refuse(server_of(request), model, error, protocol)


async def body(server: ModelServer, request: Request, protocol: Protocol) -> bytes:
    """The body as received, within the size limit."""
    kind, *parameters = request.headers.get("content-type", "").lower().split(";")
    if kind.strip() not in protocol.content_types:
        raise RequestError(415, f"content type must be {protocol.content_types[0]}")
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') not in ("utf-8", "utf8"):
            raise RequestError(415, f"charset {value.strip()!r}: bodies are read as UTF-8")
    limit = server.settings.serving_max_body_bytes
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


async def records(server: ModelServer, request: Request) -> list:
    """The JSON body's records: one object, or a batch within the row limit."""
    parsed = parse_json(await body(server, request, RECORDS))
    found = [parsed] if isinstance(parsed, dict) else parsed
    if not isinstance(found, list):
        raise RequestError(422, "body must be a record (object) or a batch (array of objects)")
    if not found:
        raise RequestError(422, "empty batch: send at least one record")
    limit = server.settings.serving_max_rows
    if len(found) > limit:
        raise RequestError(413, f"batch of {len(found)} records is over the limit of {limit}")
    return found

"""Liveness, readiness and the metrics: what probes and Prometheus ask."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from maestro.serving.deps import REFUSED, Server, TokenHolder, authorized

router = APIRouter(tags=["health"], responses=REFUSED)


@router.get("/health")
async def read_health() -> dict:
    return {"status": "ok"}


@router.get("/ready")
async def read_ready(request: Request, server: Server) -> JSONResponse:
    """Open to probes; what the plan is and why it failed (it names models) only to holders of
    the token."""
    ok = bool(server.router.models)
    body: dict = {"ready": ok}
    if authorized(server, request):
        body |= {"plan": server.router.digest, "plan_error": server.router.plan_error}
    return JSONResponse(body, status_code=200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse)
async def read_metrics(server: TokenHolder) -> Response:
    """Behind the token too: the series name every model and version served."""
    server.observe_state()
    return Response(server.metrics.exposition(), media_type="text/plain; version=0.0.4")

"""The Open Inference Protocol (KServe V2) beside the JSON routes: server and model metadata,
readiness, and inference (a plain Starlette route, as the JSON predictions: see `predict`)."""

from __future__ import annotations

from importlib import metadata

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from maestro.serving.deps import OPEN_INFERENCE, REFUSED, Server, TokenHolder, server_of
from maestro.serving.inference import predict

router = APIRouter(prefix="/v2", tags=["v2"], responses=REFUSED)


@router.get("")
async def read_server_metadata() -> dict:
    return {"name": "maestro", "version": metadata.version("maestro-ml"), "extensions": []}


@router.get("/health/live")
async def read_live() -> dict:
    return {"live": True}


@router.get("/health/ready")
async def read_ready(server: Server) -> JSONResponse:
    ok = bool(server.router.models)
    return JSONResponse({"ready": ok}, status_code=200 if ok else 503)


@router.get("/models/{model}")
@router.get("/models/{model}/versions/{version}")
async def read_model_metadata(model: str, server: TokenHolder, version: str | None = None) -> dict:
    return server.router.metadata(model, version)


@router.get("/models/{model}/ready")
@router.get("/models/{model}/versions/{version}/ready")
async def read_model_ready(model: str, server: TokenHolder, version: str | None = None) -> dict:
    server.router.metadata(model, version)  # refuses what is not served
    return {"name": model, "ready": True}


INFER = "/v2/models/{model}/infer"
INFER_VERSION = "/v2/models/{model}/versions/{version}/infer"


async def create_inference(request: Request) -> Response:
    params = request.path_params
    route = INFER_VERSION if "version" in params else INFER
    return await predict(
        server_of(request), request, route, params["model"], params.get("version"), OPEN_INFERENCE
    )


routes = [Route(path, create_inference, methods=["POST"]) for path in (INFER, INFER_VERSION)]

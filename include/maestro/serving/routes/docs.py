"""The server's OpenAPI document, for holders of the token (it names the models served)."""

from __future__ import annotations

from fastapi import APIRouter, Request

from maestro.serving.deps import TokenHolder
from maestro.serving.openapi import server_schema

router = APIRouter(tags=["docs"])


@router.get("/openapi.json", include_in_schema=False)
async def read_openapi(request: Request, server: TokenHolder) -> dict:
    return server_schema(request.app, server.router, server.settings.serving_max_rows)

"""The serving plan as applied: which versions of which models take what share."""

from __future__ import annotations

from fastapi import APIRouter

from maestro.serving.deps import TokenHolder

router = APIRouter(prefix="/v1/models", tags=["models"])


@router.get("")
async def read_models(server: TokenHolder) -> dict:
    return server.router.describe()

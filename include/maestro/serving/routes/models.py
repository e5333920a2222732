"""The serving plan as applied: which versions of which models take what share."""

from __future__ import annotations

from fastapi import APIRouter

from maestro.serving.deps import REFUSED, TokenHolder

router = APIRouter(prefix="/v1/models", tags=["models"], responses=REFUSED)


@router.get("")
async def read_models(server: TokenHolder) -> dict:
    return server.router.describe()

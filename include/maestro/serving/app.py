"""The model server's app: FastAPI on uvicorn, several models in one process, each routed by
its serving plan (canary weights, shadow, pinned versions), which it re-reads without a restart.

This module only assembles: the routes live in `maestro.serving.routes`, what they depend on in
`maestro.serving.deps`. Building the app starts nothing; its lifespan makes the server (metrics,
prediction-log writer, routing), applies the first plan before it listens, watches the plan,
and closes it all. `maestro.serving.runner` runs it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from maestro.config import Settings
from maestro.serving.deps import refusal_of
from maestro.serving.records import RequestError
from maestro.serving.routes import docs, feedback, health, models, predict, v2
from maestro.serving.routing import first_plan, watch
from maestro.serving.server import ModelServer

log = logging.getLogger("maestro.serving")


def create_app(settings: Settings, served: list[str] | None = None) -> FastAPI:
    """The app serving `served` (beside what the plan file lists)."""
    settings.require_secrets("the model server", serving_token=settings.serving_token)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if not settings.serving_token:
            log.warning(
                "no MAESTRO_SERVING_TOKEN configured: the server is open to anyone who reaches it"
            )
        server = ModelServer(settings, served or [])
        app.state.server = server
        try:
            try:
                await asyncio.to_thread(server.router.initial_plan)
            except Exception as error:  # noqa: BLE001 - the tries below say why, and go on
                log.error("serving plan not written at start: %s", error)
            await first_plan(server.router)
            watcher = asyncio.create_task(watch(server.router))
            yield
            watcher.cancel()
        finally:
            server.close()

    # the OpenAPI document is the server's own route (`routes.docs`): behind the token
    app = FastAPI(
        title="Maestro model server",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.add_exception_handler(RequestError, refusal_of)
    for router in (health.router, models.router, feedback.router, v2.router, docs.router):
        app.include_router(router)
    app.router.routes.extend(predict.routes + v2.routes)
    return app

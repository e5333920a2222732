"""The JSON prediction routes: one record or a batch, scored by the version the plan picks,
or by one version of the plan named in the path.

Plain Starlette routes: they take the raw request, so FastAPI's per-request dependency solving
would have nothing to do, but would cost about a tenth of a single-row request.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from maestro.serving.deps import server_of
from maestro.serving.inference import predict

PREDICT = "/v1/models/{model}/predict"
PREDICT_VERSION = "/v1/models/{model}/versions/{version}/predict"


async def create_prediction(request: Request) -> Response:
    return await predict(server_of(request), request, PREDICT, request.path_params["model"])


async def create_version_prediction(request: Request) -> Response:
    """Score with one version of the plan directly (a blue-green smoke test of a version that
    has no traffic yet)."""
    params = request.path_params
    return await predict(
        server_of(request), request, PREDICT_VERSION, params["model"], params["version"]
    )


routes = [
    Route(PREDICT, create_prediction, methods=["POST"]),
    Route(PREDICT_VERSION, create_version_prediction, methods=["POST"]),
]

"""Running the model server: one process, or several workers sharing the port.

maestro serve demo adult_income --port 8000
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

from fastapi import FastAPI

from maestro.config import Settings
from maestro.serving.app import create_app
from maestro.vocabulary import SERVER_STOP_SECONDS

log = logging.getLogger("maestro.serving")

MODELS_VARIABLE = "MAESTRO_SERVING_MODELS"


def app_from_environment() -> FastAPI:
    """The app of one of `maestro serve --workers N`'s processes (`maestro.serving.workers`
    starts each one fresh); the settings and models come from the environment `serve` set."""
    from maestro.config import get_settings

    models = [m for m in os.environ.get(MODELS_VARIABLE, "").split(",") if m]
    return create_app(get_settings(), models)


def serve(
    settings: Settings, models: list[str], host: str, port: int, workers: int | None = None
) -> None:
    """Serve on `host:port` with `workers` processes (default: the settings', else the CPUs).
    Each worker loads the plan, watches it and keeps its own prediction log writer; see
    `maestro.serving.workers` for how they share the port."""
    import uvicorn

    from maestro.serving.workers import supervise

    # a registry that does not answer fails a try at once, and the plan's watcher says so
    # and tries again (MLflow's own retries would hold each try for minutes, silently)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    # LightGBM's OpenMP threads sleep between batches instead of spinning on the cores the
    # event loop and the prediction log's writer need (read when the runtime loads, later)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

    # threads beside the event loop (shadow scoring, the prediction log's feeder) must not
    # hold it for Python's default 5 ms GIL slice: hand the interpreter back every 0.5 ms
    sys.setswitchinterval(0.0005)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    workers = workers or settings.server_processes
    options = {
        "host": host,
        "port": port,
        "loop": "uvloop",
        "http": "maestro.serving.http:OneWriteProtocol",  # httptools, one write per answer
        "access_log": False,
        "log_level": "warning",
        # requests in flight take milliseconds; then the prediction log drains (its own bound)
        "timeout_graceful_shutdown": SERVER_STOP_SECONDS,
    }
    if workers == 1:
        one = settings.model_copy(update={"serving_workers": 1})
        uvicorn.run(create_app(one, models), workers=1, **options)
        return
    with tempfile.TemporaryDirectory(prefix="maestro-metrics-") as metrics:
        os.environ.update(
            {
                MODELS_VARIABLE: ",".join(models),
                "MAESTRO_SERVING_WORKERS": str(workers),
                "PROMETHEUS_MULTIPROC_DIR": metrics,
            }
        )
        log.info("serving on %s:%d with %d worker processes", host, port, workers)
        supervise(options, workers)

"""What the model server's routes share while the app runs, made and closed by its lifespan."""

from __future__ import annotations

import itertools

from maestro.config import Settings
from maestro.serving.catalogue import Metrics
from maestro.serving.online import OnlineLookup
from maestro.serving.predlog import Folders, PredictionLog
from maestro.serving.routing import Router
from maestro.serving.tracing import Tracing

RECENT_IDS = 1_000_000


class ModelServer:
    """The routing, the metrics, the prediction log, tracing (when asked for) and the requests
    answered lately."""

    def __init__(self, settings: Settings, models: list[str]) -> None:
        self.settings = settings
        self.workers = settings.serving_workers or 1  # `serve` says how many there are
        self.metrics = Metrics(multiprocess=self.workers > 1)
        self.router = Router(settings, self.metrics, models)
        self.log = open_prediction_log(settings)
        self.online = OnlineLookup(settings)
        self.tracing = Tracing.from_environment()
        # (model, request id) answered lately and their row counts: feedback on them needs no
        # lookup (feedback names its model: a request of another model is unknown to it)
        self.recent: dict[tuple[str, str], int] = {}

    def close(self) -> None:
        """Drain the prediction log, export the last spans, retire this process's metrics."""
        if self.log is not None:
            self.log.close()
        if self.tracing is not None:
            self.tracing.close()
        self.metrics.close()

    def remember(self, model: str, request_id: str, rows: int) -> None:
        self.recent[(model, request_id)] = rows
        if len(self.recent) > RECENT_IDS:  # forget the oldest tenth (dicts keep order)
            for key in list(itertools.islice(self.recent, RECENT_IDS // 10)):
                del self.recent[key]

    def observe_state(self) -> None:
        """Gauges of the server's state, read when Prometheus scrapes."""
        m = self.metrics
        m.ready.set(1 if self.router.models else 0)
        m.plan_refused.set(1 if self.router.plan_error else 0)
        if self.log is not None:
            m.log_restarts.set(self.log.restarts)
            before = self.log.stats
            after = self.log.read_stats()
            m.log_pending_rows.set(self.log.waiting_rows + after.pending_rows)
            m.log_pending_bytes.set(self.log.waiting_bytes + after.pending_bytes)
            m.log_written.inc(after.written_rows - before.written_rows)
            m.log_failed_writes.inc(after.failed_writes - before.failed_writes)
            m.log_dead_letter.inc(after.dead_letter_entries - before.dead_letter_entries)


def open_prediction_log(settings: Settings) -> PredictionLog | None:
    """The prediction log the settings name, its writer process started; None when off."""
    location = settings.prediction_log_location
    if location == "off":
        return None
    return PredictionLog(
        location,
        Folders.of(location, settings.home),
        settings.prediction_log_max_rows,
        settings.prediction_log_max_bytes,
        settings.prediction_log_drain_seconds,
    )

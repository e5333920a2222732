"""The model server's metrics: every series it exports, in one catalogue.

The deployment strategies judge a canary from these series as Prometheus exposes them (a
counter `x` as `x_total`, a histogram's buckets as `x_bucket`): they take the names from here.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from maestro.serving import metric_values

REQUESTS = "maestro_requests"  # {model, version, code}: answered prediction requests
REQUEST_ERRORS = "maestro_request_errors"  # {model, reason}
REQUEST_LATENCY = "maestro_request_latency_seconds"  # {model, version}: a histogram
REQUESTS_EXPOSED = f"{REQUESTS}_total"
LATENCY_BUCKETS_EXPOSED = f"{REQUEST_LATENCY}_bucket"

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
SCORE_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
VALUE_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)


class Metrics:
    """The server's series, in this process's registry (or, with several workers, in
    Prometheus' multiprocess files, through `metric_values`' buffered values)."""

    def __init__(self, multiprocess: bool = False) -> None:
        self.multiprocess = multiprocess
        if multiprocess:
            metric_values.install()
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            REQUESTS,
            "Prediction requests answered",
            ["model", "version", "code"],
            registry=r,
        )
        self.errors = Counter(
            REQUEST_ERRORS,
            "Refused or failed prediction requests",
            ["model", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            REQUEST_LATENCY,
            "Time to answer a prediction request",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.rows = Counter(
            "maestro_predicted_rows", "Rows scored", ["model", "version", "role"], registry=r
        )
        self.scores = Histogram(
            "maestro_prediction_score",
            "Predicted P(positive) of classifiers",
            ["model", "version"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.classes = Counter(
            "maestro_predicted_class",
            "Rows answered per predicted class, of multiclass models",
            ["model", "version", "class"],
            registry=r,
        )
        self.values = Histogram(
            "maestro_prediction_value",
            "Predicted values of regressors",
            ["model", "version"],
            buckets=VALUE_BUCKETS,
            registry=r,
        )
        self.info = Gauge(
            "maestro_model_version_info",
            "Versions in the serving plan and their traffic share",
            ["model", "version", "role"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.ready = Gauge(
            "maestro_server_ready",
            "1 when a serving plan is applied and models are loaded",
            multiprocess_mode="livemin",
            registry=r,
        )
        self.plan_refused = Gauge(
            "maestro_serving_plan_refused",
            "1 while the newest serving plan is refused",
            multiprocess_mode="livemax",
            registry=r,
        )
        self.latency_budget = Gauge(
            "maestro_latency_budget_seconds",
            "The spec's single-request latency budget",
            ["model"],
            multiprocess_mode="livemax",
            registry=r,
        )
        self.log_pending_rows = Gauge(
            "maestro_prediction_log_pending_rows",
            "Rows answered but not yet written: waiting in the server and read by its writer",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.log_pending_bytes = Gauge(
            "maestro_prediction_log_pending_bytes",
            "Bytes of the rows answered but not yet written",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.log_refused = Counter(
            "maestro_prediction_log_refused_requests",
            "Requests refused (503) because the prediction log's writer is behind its bounds",
            registry=r,
        )
        self.log_restarts = Gauge(
            "maestro_prediction_log_writer_restarts",
            "Prediction log writers that died and were replaced since the server started",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.log_written = Counter(
            "maestro_prediction_log_written_rows",
            "Rows the prediction log's writers wrote",
            registry=r,
        )
        self.log_failed_writes = Counter(
            "maestro_prediction_log_failed_writes",
            "Writes of the prediction log that failed (their entries are tried again)",
            registry=r,
        )
        self.log_dead_letter = Counter(
            "maestro_prediction_log_dead_letter_entries",
            "Entries no sink could hold, set aside in the dead-letter folder",
            registry=r,
        )
        self.labels = Counter(
            "maestro_feedback_labels", "Ground-truth labels accepted", ["model"], registry=r
        )
        self.labels_refused = Counter(
            "maestro_feedback_refused", "Ground-truth labels refused", ["model"], registry=r
        )
        self.pipeline_fallback = Gauge(
            "maestro_scoring_fallback",
            "1 for a version scored by its pipeline because its fast path was refused at load",
            ["model", "version"],
            multiprocess_mode="livemax",
            registry=r,
        )

    def exposition(self) -> bytes:
        """The metrics in Prometheus' text format: this process's, or with several workers,
        all of theirs (Prometheus' multiprocess mode: counters and histograms add up, each
        gauge combines as its `multiprocess_mode` says)."""
        if not self.multiprocess:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        metric_values.write_all()
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)

    def forget(self, gauge: Gauge) -> None:
        """Drop a labelled gauge's series, as a new plan replaces the old one's versions.
        Multiprocess mode cannot remove a series: there they are set to 0."""
        if not self.multiprocess:
            gauge.clear()
            return
        for labels in list(gauge._metrics):  # prometheus_client's own record of the children
            gauge.labels(*labels).set(0)

    def close(self) -> None:
        """With several workers: write what is buffered; this process's live gauges go."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            metric_values.write_all()
            multiprocess.mark_process_dead(os.getpid())

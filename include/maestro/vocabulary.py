"""The platform's shared words, defined once: registry aliases, decision values and tags,
rollout strategies and targets, and the names of each model's DAGs and assets."""

from __future__ import annotations

# Registry aliases: the version a training run registered, the one serving, the one before.
CHALLENGER, CHAMPION, PREVIOUS = "challenger", "champion", "previous"

# A human's decision on a validated version, and the version tags that record it.
APPROVED, REJECTED = "approved", "rejected"
APPROVAL_TAGS = {  # a decision's fields and the version tags that hold them
    "decision": "approval",
    "by": "approval_by",
    "at": "approval_at",
    "comment": "approval_comment",
    "via": "approval_via",
}

# The verdict of the evaluation gates, as a version tag.
VALIDATION_STATUS_TAG = "validation_status"
PASSED, FAILED = "passed", "failed"

# A monitoring verdict that asks nothing of anyone: no drift or breach, or too few logged rows
# to judge (any other status names what it found: drift, performance, drift+performance).
OK, INSUFFICIENT_DATA = "ok", "insufficient_data"

# Lineage tags every registered version carries (model card, `maestro show`).
LINEAGE_TAGS = (
    "data_version",
    "data_rows",
    "training_window_start",
    "training_window_end",
    "feature_service",
    "feature_views",
    "airflow_dag_id",
    "airflow_run_id",
    "code_version",
    "best_trial",
    "best_family",
    "pipeline_run_id",
    "trigger",
    "trigger_reason",
    "drift_report_run_id",
)

# Why a training run ran: its schedule, a drift verdict, a person, or CI.
TRIGGERS = ("schedule", "drift", "manual", "ci")

# Requests a deployment sends to test a version carry this header; the prediction log keeps
# them under the role `smoke`, apart from production traffic (`primary`) that monitoring judges,
# and from what the plan's shadow version scored of it (`shadow`).
TRAFFIC_HEADER, SMOKE = "x-maestro-traffic", "smoke"
PRIMARY, SHADOW = "primary", "shadow"

# The executor queue of the tasks that train (tuning trials, the final fit): Celery workers that
# serve it may be the machines with the cores; other tasks go to Airflow's `default` queue.
TRAINING_QUEUE = "training"

# A stopping model server: how long requests in flight may take to finish (a slow client is cut
# off), then how long by default its prediction log may take to write what waits. A pod's
# termination grace period covers both, with room to spare.
SERVER_STOP_SECONDS = 5.0
LOG_DRAIN_SECONDS = 20.0

# Rollouts: how a new version takes traffic, and where the model server runs.
STRATEGIES = ("rolling", "blue-green", "canary")
TARGETS = ("local", "kubernetes")


def champion_asset_name(model: str) -> str:
    """The asset a promotion or rollback of `model` updates; its deployment DAG subscribes."""
    return f"{model}_champion"


def champion_asset_uri(model: str) -> str:
    return f"mlflow-model://{model}/champion"


def drift_asset_name(model: str) -> str:
    """The asset a drift or performance verdict on `model` updates; its training DAG listens."""
    return f"{model}_drift"


def drift_asset_uri(model: str) -> str:
    return f"maestro-monitor://{model}/drift"

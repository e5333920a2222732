"""What every Maestro DAG shares: its start date and its retry policy."""

from __future__ import annotations

from datetime import datetime, timedelta

START_DATE = datetime(2025, 1, 1)


def default_args(owner: str, retries: int = 2) -> dict:
    """Retries with exponential back-off for infrastructure hiccups; bad input fails at once
    whatever the count (`maestro.errors.fail_fast`)."""
    return {
        "owner": owner,
        "retries": retries,
        "retry_delay": timedelta(seconds=20),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=10),
    }

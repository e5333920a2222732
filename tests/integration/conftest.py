"""Integration tests run DAGs and the platform: each needs Airflow's metadata database."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _migrated(airflow_db) -> None:
    """Every integration test runs on a migrated metadata database."""

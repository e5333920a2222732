"""The Assets that connect DAGs across the platform, declared once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow.sdk import Asset

from maestro.vocabulary import (
    champion_asset_name,
    champion_asset_uri,
    drift_asset_name,
    drift_asset_uri,
)


def champion_asset(model: str) -> Asset:
    """Updated by every promotion or rollback of `model`; its deployment DAG is scheduled on it."""
    return Asset(name=champion_asset_name(model), uri=champion_asset_uri(model))


def drift_asset(model: str) -> Asset:
    """Updated by a drift or performance verdict of `monitor_<model>`; `train_<model>` listens."""
    return Asset(name=drift_asset_name(model), uri=drift_asset_uri(model))


def event_extras(triggering_asset_events: Mapping[Any, Any] | None) -> list[dict]:
    """What each event that triggered a run carries (its `extra`), in order, for every asset."""
    return [
        dict(event.extra) for events in (triggering_asset_events or {}).values() for event in events
    ]

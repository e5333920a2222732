"""The lifecycle's lineage in Airflow's OpenLineage events.

A task hands the datasets it read and wrote (`maestro.lineage`) to Airflow's hook lineage
collector as assets of the scheme `maestro`; the platform's package declares itself an Airflow
provider (`maestro.orchestration.openlineage`) whose converter turns those assets back into
OpenLineage datasets, which the OpenLineage provider's listener puts in
the task's COMPLETE event. With no OpenLineage transport configured the provider is disabled,
the collector is a no-op, and none of this costs anything.
"""

from __future__ import annotations

from typing import Any

from airflow.listeners import hookimpl
from airflow.sdk import BaseHook

from maestro.lineage import Lineage


class PlatformHook(BaseHook):
    """The collector files datasets under the hook that met them: the platform's stages are
    that hook for the datasets they name."""


TASK = PlatformHook()


def record(lineage: Lineage) -> None:
    """Give the collector what the running task read and wrote."""
    from airflow.sdk.lineage import get_hook_lineage_collector

    inputs, outputs = lineage
    collector = get_hook_lineage_collector()
    for dataset in inputs:
        collector.add_input_asset(context=TASK, uri=dataset.uri, asset_extra=dataset.extra())
    for dataset in outputs:
        collector.add_output_asset(context=TASK, uri=dataset.uri, asset_extra=dataset.extra())


class ForgetTaskLineage:
    """A listener that empties the collector when a task runner stops. Each task runs in a
    process of its own on an executor, but `dag.test()` (the CLI's runs) runs them all in one:
    without this, a task's events would carry the datasets of the tasks before it."""

    @hookimpl
    def before_stopping(self, component: Any) -> None:
        from airflow.sdk.lineage import get_hook_lineage_collector

        get_hook_lineage_collector.cache_clear()

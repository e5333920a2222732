"""Maestro ML's lineage listener (see `maestro.orchestration.lineage`): loaded only when
Airflow's OpenLineage provider is enabled (a transport is configured)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin
from airflow.providers.openlineage import conf


class MaestroLineagePlugin(AirflowPlugin):
    name = "maestro_lineage"
    if not conf.is_disabled():
        from maestro.orchestration.lineage import ForgetTaskLineage

        listeners = [ForgetTaskLineage()]

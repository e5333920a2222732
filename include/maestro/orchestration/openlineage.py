"""The platform as an Airflow provider of one asset scheme, `maestro`, and its OpenLineage
converter (the `apache_airflow_provider` entry point in pyproject.toml names `provider_info`).

Airflow imports this module wherever it discovers providers and their asset converters (DAG
parsing included), so it imports nothing until a `maestro` asset is converted, which happens
only with OpenLineage enabled.
"""

from __future__ import annotations

from functools import cache
from typing import Any


def provider_info() -> dict[str, Any]:
    """What Airflow's providers manager reads: the `maestro` asset scheme and its converter."""
    return {
        "package-name": "maestro-ml",
        "name": "Maestro ML",
        "description": "Datasets of the ML lifecycle (snapshots, feature views, training sets, "
        "model versions, deployments) as OpenLineage datasets.",
        "asset-uris": [
            {
                "schemes": ["maestro"],
                "handler": None,
                "to_openlineage_converter": "maestro.orchestration.openlineage.to_openlineage",
            }
        ],
    }


def to_openlineage(asset: Any, lineage_context: Any) -> Any:
    """An asset of the `maestro` scheme as the OpenLineage dataset it stands for: its version
    as the standard `version` facet, what else the platform knows in a `maestro` facet."""
    from openlineage.client.event_v2 import Dataset as OpenLineageDataset
    from openlineage.client.facet_v2 import dataset_version_dataset

    from maestro.lineage import Dataset

    dataset = Dataset.from_asset(asset.uri, asset.extra or {})
    facets: dict[str, Any] = {}
    if dataset.version is not None:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=dataset.version
        )
    if dataset.properties:
        facets["maestro"] = maestro_facet()(properties=dataset.properties)
    return OpenLineageDataset(namespace=dataset.namespace, name=dataset.name, facets=facets)


@cache
def maestro_facet() -> type:
    """The `maestro` dataset facet: rows, window, splits, strategy (a class made on first use,
    so that importing this module costs nothing)."""
    import attr
    from openlineage.client.generated.base import DatasetFacet

    @attr.define
    class MaestroDatasetFacet(DatasetFacet):
        properties: dict[str, Any] = attr.field(factory=dict)

        @staticmethod
        def _get_schema() -> str:
            return "urn:maestro-ml:facets:1-0-0:MaestroDatasetFacet"

    return MaestroDatasetFacet

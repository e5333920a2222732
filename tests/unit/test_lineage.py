"""Lineage datasets: each source named as OpenLineage's integrations name it (never with a
password), and a dataset carried through an Airflow asset to the OpenLineage dataset the
provider puts in a task's event."""

from __future__ import annotations

import json

from maestro import lineage
from maestro.config import get_settings
from maestro.spec import get_spec

# stores whose URLs carry a password that no dataset name may show
WAREHOUSE = "postgres://reader:s3cret@db.internal:5432/dw"  # pragma: allowlist secret
SHOP = "mysql+pymysql://root:pw@shop:3306/sales"  # pragma: allowlist secret
LOG = "postgresql://maestro:hunter22@logs.internal:5432/predlog"  # pragma: allowlist secret


def source_datasets(use_specs, source: dict) -> list[tuple[str, str]]:
    settings = use_specs({"demo": {"source": source}})
    return [(d.namespace, d.name) for d in lineage.sources(get_spec("demo", settings), settings)]


def test_each_kind_of_source_is_named_as_openlineage_names_it(use_specs, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", WAREHOUSE)
    query = "SELECT * FROM events e JOIN public.customers c ON e.id = c.id"
    assert source_datasets(
        use_specs, {"format": "sql", "conn_id": "warehouse", "query": query}
    ) == [
        ("postgres://db.internal:5432", "dw.events"),
        ("postgres://db.internal:5432", "dw.public.customers"),
    ]
    monkeypatch.setenv("MAESTRO_SOURCE_SHOP", SHOP)
    sql = {
        "format": "sql",
        "connection_env": "MAESTRO_SOURCE_SHOP",
        "query": "SELECT * FROM orders",
    }
    assert source_datasets(use_specs, sql) == [("mysql://shop:3306", "sales.orders")]
    lake = {
        "format": "parquet",
        "path": "s3://lake/events/",
        "conn_id": "lake",
        "partition_key": "day",
    }
    assert source_datasets(use_specs, lake) == [("s3://lake", "events/")]
    (tmp_path / "x.csv").write_text("a\n1\n")
    assert source_datasets(use_specs, {"format": "csv", "path": str(tmp_path / "x.csv")}) == [
        ("file", str(tmp_path / "x.csv"))
    ]
    assert source_datasets(use_specs, {"format": "demo", "seed": 3}) == [
        ("maestro://demo", "demo/seed=3")
    ]


def test_a_store_url_names_its_host_never_its_password(monkeypatch):
    monkeypatch.setenv("MAESTRO_PREDICTION_LOG", LOG)
    get_settings.cache_clear()
    log = lineage.prediction_log(get_settings(), "demo")
    get_settings.cache_clear()
    assert (log.namespace, log.name) == ("postgres://logs.internal:5432", "prediction_log/demo")


def test_a_dataset_reaches_openlineage_through_an_airflow_asset():
    from airflow.sdk import Asset
    from openlineage.client.serde import Serde

    from maestro.orchestration.openlineage import to_openlineage

    snapshot = lineage.Dataset("file", "/state/snapshots/demo/ab12.parquet", "ab12", {"rows": 3000})
    asset = Asset(uri=snapshot.uri, extra=snapshot.extra())
    converted = json.loads(Serde.to_json(to_openlineage(asset, None)))
    assert (converted["namespace"], converted["name"]) == (
        "file",
        "/state/snapshots/demo/ab12.parquet",
    )
    assert converted["facets"]["version"]["datasetVersion"] == "ab12"
    assert converted["facets"]["maestro"]["properties"] == {"rows": 3000}
    assert converted["facets"]["maestro"]["_schemaURL"].startswith("urn:maestro-ml:")
    plain = to_openlineage(Asset(uri=lineage.Dataset("feast://maestro", "demo_features").uri), None)
    assert (plain.namespace, plain.name, plain.facets) == ("feast://maestro", "demo_features", {})

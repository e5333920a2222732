"""Data where it lives: SQL sources through Airflow connections on PostgreSQL and MariaDB, with
the run's window kept in the database, and object storage over HTTP against an S3-compatible
server that checks signatures. Every bad source is one line naming it, and nothing is written."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy

from maestro.config import get_settings
from maestro.data import sources
from maestro.spec import get_spec
from tests.support import mariadb_database, postgres_databases, s3_server
from tests.unit.data.test_sources import good_frame

WINDOW = {"start": "2025-03-01", "end": "2025-09-01"}


def in_window(frame: pd.DataFrame) -> pd.DataFrame:
    ts = frame["event_timestamp"]
    return frame[
        (ts >= pd.Timestamp(WINDOW["start"], tz="UTC"))
        & (ts < pd.Timestamp(WINDOW["end"], tz="UTC"))
    ]


def with_poison(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows outside the window whose target is missing: reading them fails the run, so a run
    that succeeds did not read them."""
    poison = frame.head(2).copy()
    poison["event_timestamp"] = [
        pd.Timestamp("2024-06-01", tz="UTC"),
        pd.Timestamp("2026-06-01", tz="UTC"),
    ]
    poison["customer_id"] = [10**6, 10**6 + 1]
    poison["churned"] = None
    return pd.concat([frame, poison], ignore_index=True)


def ingest(use_specs, source: dict, window: dict | None = None):
    settings = use_specs({"demo": {"source": source, "window": window or WINDOW}})
    return sources.ingest(get_spec("demo", settings), settings, None), settings


def snapshots(settings) -> list:
    return sorted((Path(settings.snapshot_store_location) / "demo").glob("*.parquet"))


# --- SQL through Airflow connections -------------------------------------------------------


def postgres_connection() -> tuple[object, str, str]:
    """A warehouse database on PostgreSQL, its URL and its Airflow connection in URI form."""
    context = postgres_databases("warehouse")
    url = context.__enter__()["warehouse"]
    name = url.rsplit("/", 1)[1]
    return (
        context,
        url.replace("postgresql://", "postgresql+psycopg2://"),
        f"postgres://postgres@127.0.0.1:5432/{name}",
    )


def mariadb_connection() -> tuple[object, str, str]:
    """A warehouse database on MariaDB, its URL and its Airflow connection in JSON form."""
    context = mariadb_database()
    url = context.__enter__()
    name = url.rsplit("/", 1)[1]
    conn = {
        "conn_type": "mysql",
        "host": "127.0.0.1",
        "port": 3306,
        "login": "root",
        "schema": name,
    }
    return context, url, json.dumps(conn)


@pytest.fixture(
    params=[
        pytest.param(postgres_connection, id="postgresql"),
        pytest.param(mariadb_connection, id="mariadb"),
    ]
)
def warehouse(request, monkeypatch):
    """A real database with an `events` table (3,000 rows over 2025, naive UTC timestamps, and
    poison rows outside the window), reachable as the Airflow connection `warehouse`."""
    context, url, connection = request.param()
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    frame = with_poison(good_frame(3000))
    stored = frame.assign(event_timestamp=frame["event_timestamp"].dt.tz_localize(None))
    stored.to_sql("events", engine, index=False)
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", connection)
    try:
        yield frame
    finally:
        engine.dispose()
        context.__exit__(None, None, None)


def test_a_sql_source_reads_only_the_window_from_an_airflow_connection(warehouse, use_specs):
    source = {
        "format": "sql",
        "conn_id": "warehouse",
        "query": "SELECT * FROM events",
        "chunk_rows": 1000,
    }
    version, _ = ingest(use_specs, source)
    expected = in_window(warehouse)
    assert version.rows == len(expected)
    assert version.source == "sql query via connection warehouse"
    snapshot = pd.read_parquet(version.path)
    assert sorted(snapshot["customer_id"]) == sorted(expected["customer_id"])
    assert snapshot["event_timestamp"].min() >= pd.Timestamp(WINDOW["start"], tz="UTC")


def test_a_sql_sources_connection_may_come_from_a_secrets_backend(tmp_path, monkeypatch, use_specs):
    """Airflow's local secrets file as the secrets backend (Vault and the others plug in the
    same way): the spec names the connection, the backend holds it."""
    from airflow.sdk.configuration import clear_secrets_backends_cache

    with postgres_databases("warehouse") as urls:
        url = urls["warehouse"].replace("postgresql://", "postgresql+psycopg2://")
        engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        good_frame(2000).assign(
            event_timestamp=lambda f: f["event_timestamp"].dt.tz_localize(None)
        ).to_sql("events", engine, index=False)
        engine.dispose()
        secrets = tmp_path / "connections.yaml"
        secrets.write_text(
            "warehouse_from_secrets:\n  conn_type: postgres\n  host: 127.0.0.1\n  port: 5432\n"
            f"  login: postgres\n  schema: {url.rsplit('/', 1)[1]}\n"
        )
        monkeypatch.setenv(
            "AIRFLOW__SECRETS__BACKEND", "airflow.secrets.local_filesystem.LocalFilesystemBackend"
        )
        monkeypatch.setenv(
            "AIRFLOW__SECRETS__BACKEND_KWARGS", json.dumps({"connections_file_path": str(secrets)})
        )
        clear_secrets_backends_cache()
        try:
            source = {
                "format": "sql",
                "conn_id": "warehouse_from_secrets",
                "query": "SELECT * FROM events",
            }
            version, _ = ingest(use_specs, source)
        finally:
            monkeypatch.delenv("AIRFLOW__SECRETS__BACKEND")
            clear_secrets_backends_cache()
    assert version.rows == len(in_window(good_frame(2000)))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            {"conn_id": "no_such_connection"},
            "source.conn_id: Airflow connection 'no_such_connection' is not defined",
        ),
        (
            {"query": "SELECT * FROM no_such_table"},
            "sql query via connection warehouse: .*no_such_table",
        ),
        (
            {"conn_id": "closed_port"},
            "sql query via connection closed_port: OperationalError: .*127.0.0.1",
        ),
        (
            {"conn_id": "not_a_database"},
            "connection 'not_a_database' is of type 'http'; a SQL source reads",
        ),
    ],
    ids=["unknown-conn-id", "failing-query", "unreachable", "not-a-database"],
)
def test_a_bad_sql_source_is_one_line_naming_it_and_writes_nothing(
    use_specs, monkeypatch, source, message
):
    monkeypatch.setenv("AIRFLOW_CONN_WAREHOUSE", "postgres://postgres@127.0.0.1:5432/postgres")
    monkeypatch.setenv("AIRFLOW_CONN_CLOSED_PORT", "postgres://postgres@127.0.0.1:1/postgres")
    monkeypatch.setenv("AIRFLOW_CONN_NOT_A_DATABASE", "http://example.org")
    with pytest.raises(sources.DataError, match=message) as info:
        ingest(
            use_specs, {"format": "sql", "conn_id": "warehouse", "query": "SELECT 1 AS x"} | source
        )
    assert "\n" not in str(info.value)
    assert snapshots(get_settings()) == []


# --- Object storage -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


@pytest.fixture
def lake(s3, monkeypatch):
    """The S3 server, with the Airflow connection `lake` holding the reader's keys."""
    monkeypatch.setenv("AIRFLOW_CONN_LAKE", s3.connection(s3.reader))
    return s3


def put(s3, key: str, body: bytes) -> None:
    s3.client(s3.admin).put_object(Bucket="lake", Key=key, Body=body)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def test_csv_and_parquet_sources_are_read_from_object_storage_through_an_airflow_connection(
    lake, use_specs
):
    frame = good_frame(1500)
    put(lake, "data/churn/all.csv", frame.to_csv(index=False).encode())
    put(lake, "data/churn/all.parquet", parquet_bytes(frame))
    from_csv, _ = ingest(
        use_specs, {"format": "csv", "path": "s3://lake/data/churn/all.csv", "conn_id": "lake"}
    )
    from_parquet, _ = ingest(
        use_specs,
        {"format": "parquet", "path": "s3://lake/data/churn/all.parquet", "conn_id": "lake"},
    )
    assert from_csv.rows == from_parquet.rows == len(in_window(frame))
    assert from_csv.hash == from_parquet.hash  # the same rows, whichever format carried them
    assert from_csv.source == "s3://lake/data/churn/all.csv"


def test_only_the_windows_partitions_are_read_and_each_must_have_the_same_schema(lake, use_specs):
    frame = good_frame(3000)
    months = frame["event_timestamp"].dt.strftime("%Y-%m")
    for month, rows in frame.groupby(months):
        put(lake, f"data/events/month={month}/part-0.parquet", parquet_bytes(rows))
    # outside the window: a partition that is not parquet at all; reading it would fail
    put(lake, "data/events/month=2024-12/part-0.parquet", b"not parquet")
    source = {
        "format": "parquet",
        "path": "s3://lake/data/events/",
        "conn_id": "lake",
        "partition_key": "month",
    }
    version, _ = ingest(use_specs, source)
    assert version.rows == len(in_window(frame))

    other = frame[months == "2025-05"].astype({"age": "string"})
    put(lake, "data/events/month=2025-05/part-0.parquet", parquet_bytes(other))
    with pytest.raises(
        sources.DataError,
        match=r"partition lake/data/events/month=2025-05/part-0.parquet has another schema: 'age' is string there, int64 in lake/data/events/month=2025-03/part-0.parquet",
    ):
        ingest(use_specs, source)


@pytest.mark.parametrize(
    ("path", "keys", "message"),
    [
        (
            "s3://lake/data/no/such.csv",
            "reader",
            "s3://lake/data/no/such.csv: source file not found",
        ),
        (
            "s3://lake/private/churn.csv",
            "reader",
            "s3://lake/private/churn.csv: access denied .*check the connection's credentials",
        ),
        ("s3://lake/data/churn.csv", "wrong-secret", "s3://lake/data/churn.csv: access denied"),
        (
            "s3://lake/data/churn.csv",
            "unreachable",
            "s3://lake/data/churn.csv: cannot be reached: .*Could not connect",
        ),
        (
            "s3://lake/data/churn.csv",
            "undefined",
            "source.conn_id: Airflow connection 'lake' is not defined",
        ),
    ],
    ids=[
        "missing-object",
        "denied-key",
        "denied-credentials",
        "unreachable-endpoint",
        "unknown-conn-id",
    ],
)
def test_a_bad_object_storage_source_is_one_line_naming_it_and_writes_nothing(
    s3, use_specs, monkeypatch, path, keys, message
):
    put(s3, "data/churn.csv", good_frame(200).to_csv(index=False).encode())
    put(s3, "private/churn.csv", good_frame(200).to_csv(index=False).encode())
    connection = json.loads(s3.connection(s3.reader))
    if keys == "wrong-secret":
        connection["password"] = "not-the-secret"  # pragma: allowlist secret
    if keys == "unreachable":
        connection["extra"]["endpoint_url"] = "http://127.0.0.1:1"
    if keys != "undefined":
        monkeypatch.setenv("AIRFLOW_CONN_LAKE", json.dumps(connection))
    with pytest.raises(sources.DataError, match=message) as info:
        ingest(use_specs, {"format": "csv", "path": path, "conn_id": "lake"})
    assert "\n" not in str(info.value)
    assert snapshots(get_settings()) == []


def test_snapshots_are_kept_in_object_storage_and_written_once(lake, use_specs, monkeypatch):
    """One setting moves the snapshot store to a bucket (its connection another): the run's
    snapshot is written there, read back whole, never rewritten by a run of the same data; a
    prefix the connection may not write is one line naming the store."""
    put(lake, "data/churn/all.parquet", parquet_bytes(good_frame(1500)))
    source = {"format": "parquet", "path": "s3://lake/data/churn/all.parquet", "conn_id": "lake"}
    monkeypatch.setenv("MAESTRO_SNAPSHOT_STORE", "s3://lake/data/snapshots")
    monkeypatch.setenv("MAESTRO_SNAPSHOT_STORE_CONN_ID", "lake")
    version, settings = ingest(use_specs, source)
    key = f"data/snapshots/demo/{version.hash}"
    assert version.path == f"s3://lake/{key}.parquet"
    assert snapshots(settings) == []  # nothing on the local disk
    read_back = sources.load_snapshot(version.to_dict(), settings)
    assert len(read_back) == version.rows and sources.content_hash(read_back) == version.hash
    admin = lake.client(lake.admin)
    admin.put_object(Bucket="lake", Key=f"{key}.json", Body=b"{}")  # marks what was written
    assert ingest(use_specs, source)[0] == version
    assert admin.get_object(Bucket="lake", Key=f"{key}.json")["Body"].read() == b"{}"

    monkeypatch.setenv("MAESTRO_SNAPSHOT_STORE", "s3://lake/private/snapshots")
    message = r"^snapshot store s3://lake/private/snapshots: access denied .*credentials$"
    with pytest.raises(sources.DataError, match=message):
        ingest(use_specs, source)


def test_the_prediction_log_is_kept_in_object_storage(lake, use_specs, monkeypatch, tmp_path):
    """One setting moves the prediction log to a bucket (its connection another): the server's
    log writer writes it there, a writer merges its own objects as they pile up, every row is
    read exactly once (also when a merged part outlives its merge, as after a crash between
    the two), and labels are kept beside it."""
    import numpy as np

    from maestro.logs import predictions
    from maestro.logs.labels import read_labels, store_labels
    from maestro.serving.predlog import Folders, PredictionLog

    url = "s3://lake/data/prediction_log"
    monkeypatch.setenv("MAESTRO_PREDICTION_LOG", url)
    monkeypatch.setenv("MAESTRO_PREDICTION_LOG_CONN_ID", "lake")
    settings = use_specs({})
    assert not predictions.has_log(url, "demo")
    log = PredictionLog(url, Folders.of(url, tmp_path))  # the server's writer, in its process
    scores = np.array([0.2, 0.7]).tobytes()
    body = b'[{"age": 30}, {"age": 41}]'
    log.append(1.8e9, "served", "demo", "1", "primary", 1.0, ("age",), body, scores)
    log.close()
    assert predictions.read_log(url, "demo")["feature.age"].tolist() == [30, 41]

    store = predictions.prediction_store(url)
    sink, day = predictions.sink_for(store), "2027-01-15"
    folder = f"data/prediction_log/model=demo/date={day}"
    admin = lake.client(lake.admin)
    for n in range(40):  # more writes than one merge takes (32)
        entry = predictions.Entry(
            1.8e9 + n, f"r{n}", "demo", "1", "primary", 1.0, ("age",), body, scores
        )
        sink.write("demo", predictions.arrow_table(predictions.rows_of([entry])))
        if n == 0:
            first = admin.list_objects_v2(Bucket="lake", Prefix=folder)["Contents"][0]["Key"]
            kept = admin.get_object(Bucket="lake", Key=first)["Body"].read()
    keys = [o["Key"] for o in admin.list_objects_v2(Bucket="lake", Prefix=folder)["Contents"]]
    # 32 merged into one (the parts deleted), 8 since, and the server's writer's own object,
    # which this writer leaves alone
    assert sum("/l1-" in k for k in keys) == 1 and len(keys) == 1 + 8 + 1
    admin.put_object(Bucket="lake", Key=first, Body=kept)  # a part that outlived its merge
    read = predictions.read_log(url, "demo", role="primary")
    assert sorted(read["request_id"]) == sorted(["served"] * 2 + [f"r{n}" for n in range(40)] * 2)

    labels = pd.DataFrame({"request_id": ["r1", "r1"], "row": [0, 1], "label": [1.0, 0.0]})
    assert store_labels(settings, "demo", labels) == 2
    assert read_labels(settings, "demo")["label"].tolist() == [1.0, 0.0]
    stored = admin.list_objects_v2(Bucket="lake", Prefix="data/feedback/")["Contents"]
    assert stored  # beside the log, in the same bucket


def test_mlflow_keeps_a_versions_artifacts_in_object_storage(s3, use_specs, monkeypatch):
    """One setting moves MLflow's artifact root to the store: a registered version's files are
    written there and the version loads back from its registry URI."""
    from maestro.data.synthetic import generate
    from maestro.models import load_version
    from tests.support import fit_lightgbm, register_version

    monkeypatch.setenv("MAESTRO_MLFLOW_ARTIFACT_ROOT", "s3://lake/data/mlflow")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", s3.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3.reader[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3.reader[1])
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings = use_specs({})
    spec = get_spec("demo", settings)
    frame = sources.conform(generate(1000, seed=3), spec, "demo")
    pipeline = fit_lightgbm(spec, frame, {"n_estimators": 10, "num_leaves": 15})
    version = register_version(settings, spec, pipeline, frame)
    stored = s3.client(s3.admin).list_objects_v2(Bucket="lake", Prefix="data/mlflow/demo/")
    assert any(o["Key"].endswith("MLmodel") for o in stored.get("Contents", []))
    model = load_version(f"models:/demo/{version}")
    rows = frame[spec.feature_names].head(20)
    assert (model.predict(rows) == pipeline.predict(rows)).all()

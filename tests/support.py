"""What tests (and the benchmarks' smoke runs) share besides fixtures: the project's places,
fresh databases on the servers of this machine, shipped specs with fields changed, a
registered champion, an approver at work, a webhook receiver. Fixtures are in `conftest.py`."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT.parent / "shared" / "data"
DAGS = PROJECT / "dags"


def write_specs(folder: Path, overrides: dict[str, dict]) -> Path:
    """Copies of the shipped specs with some fields changed (e.g. a smaller demo); a mapping
    is merged into the spec's own, unless it changes the source's format."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in (PROJECT / "include" / "specs").glob("*.yaml"):
        raw = yaml.safe_load(path.read_text())
        for key, value in overrides.get(path.stem, {}).items():
            old = raw.get(key)
            same_kind = isinstance(old, dict) and value.get("format", old.get("format")) == old.get(
                "format"
            )
            if isinstance(value, dict) and same_kind:
                raw[key] = {**raw[key], **value}
            else:
                raw[key] = value
        (folder / path.name).write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def needs_shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared reference datasets are not beside the project")
    return path


def needs_torch() -> None:
    """Skip (a failure under MAESTRO_REQUIRE_TORCH) when PyTorch, an optional extra, is absent."""
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        message = "PyTorch is not installed (pip install torch==2.13.0)"
        if os.environ.get("MAESTRO_REQUIRE_TORCH"):
            pytest.fail(f"the PyTorch tests are required (MAESTRO_REQUIRE_TORCH): {message}")
        pytest.skip(message + "; set MAESTRO_REQUIRE_TORCH to fail instead")


def forest_cover_frame(settings: Any) -> Any:
    """UCI Covertype as forest_cover's spec reads it: its keys, its types, the cover types
    as class codes."""
    from maestro.data import sources
    from maestro.spec import get_spec

    spec = get_spec("forest_cover", settings)
    raw = sources.add_keys(sources.read_source(spec, settings), spec, "covtype")
    frame = sources.conform(raw, spec, "covtype")
    frame[spec.target.name] = sources.encode_classes(frame[spec.target.name], spec, "covtype")
    return frame


def fit_lightgbm(spec: Any, frame: Any, params: dict, threads: int = 1) -> Any:
    """A LightGBM pipeline of `spec` fitted on `frame` (its features and target)."""
    from maestro.training.families import build_estimator, fit

    X, y = frame[spec.feature_names], frame[spec.target.name].to_numpy()
    return fit(build_estimator(spec, "lightgbm", params, threads=threads), spec, "lightgbm", X, y)


def register_version(
    settings: Any,
    spec: Any,
    pipeline: Any,
    frame: Any,
    alias: str | None = "champion",
    trainer: str | None = None,
) -> str:
    """Log `pipeline` as the training DAG does (signature, input example from `frame`'s first
    complete rows; a model from the spec's `trainer`, with its code and requirements), register
    it as a version of `spec`'s model, point `alias` at it (unless None), and return the
    version."""
    import mlflow

    from maestro import tracking
    from maestro.training import custom
    from maestro.training.stages import log_pipeline, serving_requirements

    example = frame[spec.feature_names].dropna().head(5)
    with mlflow.start_run(experiment_id=tracking.experiment_id(settings, spec.name)):
        if trainer is None:
            logged = log_pipeline(pipeline, spec, example)
        else:
            requirements = serving_requirements(pipeline)
            logged = custom.log_model(spec, trainer, pipeline, example, requirements)
    version = str(mlflow.register_model(logged.model_uri, spec.name).version)
    if alias is not None:
        tracking.client(settings).set_registered_model_alias(spec.name, alias, version)
    return version


POSTGRES = os.environ.get("MAESTRO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")


def postgres_admin():
    """A connection to the test PostgreSQL server's `postgres` database, or a skip (a failure
    under MAESTRO_REQUIRE_POSTGRES) when none answers."""
    import psycopg2

    try:
        conn = psycopg2.connect(f"{POSTGRES}/postgres", connect_timeout=5)
    except psycopg2.OperationalError as error:
        if os.environ.get("MAESTRO_REQUIRE_POSTGRES"):
            pytest.fail(
                f"PostgreSQL at {POSTGRES} is required (MAESTRO_REQUIRE_POSTGRES) but: {error}"
            )
        pytest.skip(
            f"no PostgreSQL server answers at {POSTGRES}; set MAESTRO_REQUIRE_POSTGRES to fail "
            "instead"
        )
    conn.autocommit = True
    return conn


@contextmanager
def postgres_databases(*roles: str):
    """Fresh, uniquely named databases, one per role, as {role: URL}; dropped afterwards."""
    import uuid

    conn = postgres_admin()
    suffix = uuid.uuid4().hex[:10]
    names = {role: f"maestro_test_{role}_{suffix}" for role in roles}
    with conn.cursor() as cur:
        for name in names.values():
            cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {role: f"{POSTGRES}/{name}" for role, name in names.items()}
    finally:
        with conn.cursor() as cur:
            for name in names.values():
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.close()


MARIADB = os.environ.get("MAESTRO_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")


@contextmanager
def mariadb_database():
    """A fresh, uniquely named MariaDB database as its SQLAlchemy URL, dropped afterwards; a
    skip (a failure under MAESTRO_REQUIRE_MARIADB) when no server answers."""
    import uuid

    import sqlalchemy

    engine = sqlalchemy.create_engine(MARIADB, poolclass=sqlalchemy.pool.NullPool)
    name = f"maestro_test_{uuid.uuid4().hex[:10]}"
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE `{name}`")
    except sqlalchemy.exc.OperationalError as error:
        if os.environ.get("MAESTRO_REQUIRE_MARIADB"):
            pytest.fail(f"MariaDB at {MARIADB} is required (MAESTRO_REQUIRE_MARIADB) but: {error}")
        pytest.skip(f"no MariaDB answers at {MARIADB}; set MAESTRO_REQUIRE_MARIADB to fail instead")
    try:
        yield f"{MARIADB}/{name}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS `{name}`")
        engine.dispose()


REDIS = os.environ.get("MAESTRO_TEST_REDIS", "redis://127.0.0.1:6379")


@contextmanager
def redis_databases(count: int):
    """`count` empty Redis databases (numbers 1-15, as redis:// URLs), flushed afterwards; a
    skip (a failure under MAESTRO_REQUIRE_REDIS) when no Redis answers."""
    import random

    import redis

    try:
        found = [n for n in range(1, 16) if redis.Redis.from_url(f"{REDIS}/{n}").dbsize() == 0]
    except redis.exceptions.ConnectionError as error:
        if os.environ.get("MAESTRO_REQUIRE_REDIS"):
            pytest.fail(f"Redis at {REDIS} is required (MAESTRO_REQUIRE_REDIS) but: {error}")
        pytest.skip(f"no Redis answers at {REDIS}; set MAESTRO_REQUIRE_REDIS to fail instead")
    if len(found) < count:
        pytest.fail(f"Redis at {REDIS} has fewer than {count} empty databases")
    urls = [f"{REDIS}/{n}" for n in random.sample(found, count)]
    try:
        yield urls
    finally:
        for url in urls:
            redis.Redis.from_url(url).flushdb()


@dataclass(frozen=True)
class S3Server:
    """An S3-compatible server on loopback (moto's, in its own process) that checks every
    request's signature against its IAM users: `admin` may do anything; `reader` may only read
    the bucket `lake` under `data/` (keys are `(access key id, secret)`)."""

    endpoint: str
    admin: tuple[str, str]
    reader: tuple[str, str]

    def client(self, keys: tuple[str, str], service: str = "s3") -> Any:
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=keys[0],
            aws_secret_access_key=keys[1],
        )

    def connection(self, keys: tuple[str, str]) -> str:
        """An Airflow `aws` connection for these keys, as AIRFLOW_CONN_<ID> holds it (JSON)."""
        import json

        return json.dumps(
            {
                "conn_type": "aws",
                "login": keys[0],
                "password": keys[1],
                "extra": {"endpoint_url": self.endpoint, "region_name": "us-east-1"},
            }
        )


@contextmanager
def s3_server():
    """Start an `S3Server`; stopped afterwards."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # moto lets the first three requests through unsigned (making `admin`), then checks all
    env = dict(os.environ, INITIAL_NO_AUTH_ACTION_COUNT="3")
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1)  # nosec B310 - loopback
                break
            except OSError:
                time.sleep(0.05)
        unsigned = S3Server(endpoint, ("bootstrap", "bootstrap"), ("", ""))
        iam = unsigned.client(unsigned.admin, "iam")
        everything = {"Effect": "Allow", "Action": "*", "Resource": "*"}
        admin = _iam_user(iam, "admin", [everything])
        iam = unsigned.client(admin, "iam")
        unsigned.client(admin).create_bucket(Bucket="lake")
        reads = {
            "Effect": "Allow",
            "Action": "s3:*",
            "Resource": ["arn:aws:s3:::lake", "arn:aws:s3:::lake/data/*"],
        }
        reader = _iam_user(iam, "reader", [reads])
        yield S3Server(endpoint, admin, reader)
    finally:
        server.terminate()
        server.wait(timeout=10)


def _iam_user(iam: Any, name: str, statements: list[dict]) -> tuple[str, str]:
    import json

    iam.create_user(UserName=name)
    document = json.dumps({"Version": "2012-10-17", "Statement": statements})
    iam.put_user_policy(UserName=name, PolicyName=name, PolicyDocument=document)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


@contextmanager
def deciding(settings, model: str, decision: str = "approved", by: str = "admin"):
    """Play the approver: answer by tag, as `maestro approve|reject` does, every version of
    `model` that passed its gates and waits for a decision, while the block runs."""
    from maestro import tracking
    from maestro.governance import decisions
    from maestro.vocabulary import APPROVAL_TAGS, PASSED, VALIDATION_STATUS_TAG

    tracking.client(settings).search_registered_models()  # import MLflow's stores here, not
    stop = threading.Event()  # in the thread: two threads importing at once can deadlock
    errors: list[Exception] = []

    def answer() -> None:
        while not stop.is_set():
            try:
                for v in tracking.client(settings).search_model_versions(f"name = '{model}'"):
                    passed = v.tags.get(VALIDATION_STATUS_TAG) == PASSED
                    if passed and APPROVAL_TAGS["decision"] not in v.tags:
                        decisions.record_decision(
                            settings, model, v.version, decision, by, "decided by the test", "cli"
                        )
            except Exception as error:  # noqa: BLE001 - reported when the block ends
                errors.append(error)
            stop.wait(0.5)

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
    assert not errors, errors


PROMETHEUS_TOOLS = {
    "prometheus": Path("/usr/bin/prometheus"),
    "promtool": Path("/usr/bin/promtool"),
    "alertmanager": Path("/usr/bin/prometheus-alertmanager"),
    "pushgateway": Path("/usr/bin/prometheus-pushgateway"),
    "amtool": Path("/usr/bin/amtool"),
}


@contextmanager
def post_receiver(decode: Callable[[bytes], list], path: str = ""):
    """An HTTP endpoint on loopback that answers every POST 200 and keeps what `decode` makes
    of each body: (its URL, everything kept)."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    received: list = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.extend(decode(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}{path}", received
    finally:
        server.shutdown()


def webhook_receiver():
    """A webhook on loopback that keeps every JSON body posted to it: (its URL, the bodies)."""
    import json

    return post_receiver(lambda body: [json.loads(body)], "/hook")


# An OpenLineage run event as the specification defines it (spec 2-0-2, `RunEvent` and the
# objects it holds: https://openlineage.io/spec/2-0-2/OpenLineage.json), required fields and
# types; written out here because the published file cannot be fetched from this machine.
_URI = {"type": "string", "pattern": r"^[A-Za-z][A-Za-z0-9+.-]*:"}
_FACETS = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "properties": {"_producer": _URI, "_schemaURL": _URI},
        "required": ["_producer", "_schemaURL"],
    },
}
_DATASET = {
    "type": "object",
    "properties": {
        "namespace": {"type": "string", "minLength": 1},
        "name": {"type": "string", "minLength": 1},
        "facets": _FACETS,
        "inputFacets": _FACETS,
        "outputFacets": _FACETS,
    },
    "required": ["namespace", "name"],
}
OPENLINEAGE_RUN_EVENT = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "properties": {
        "eventTime": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"},
        "producer": _URI,
        "schemaURL": _URI,
        "eventType": {"enum": ["START", "RUNNING", "COMPLETE", "ABORT", "FAIL", "OTHER"]},
        "run": {
            "type": "object",
            "properties": {"runId": {"type": "string", "format": "uuid"}, "facets": _FACETS},
            "required": ["runId"],
        },
        "job": {
            "type": "object",
            "properties": {
                "namespace": {"type": "string", "minLength": 1},
                "name": {"type": "string", "minLength": 1},
                "facets": _FACETS,
            },
            "required": ["namespace", "name"],
        },
        "inputs": {"type": "array", "items": _DATASET},
        "outputs": {"type": "array", "items": _DATASET},
    },
    "required": ["eventTime", "producer", "schemaURL", "run", "job"],
}


def openlineage_to_files(folder: Path) -> dict[str, str]:
    """The environment that makes Airflow's OpenLineage provider write every event to a file
    of its own in `folder` (its file transport)."""
    import json

    folder.mkdir(parents=True, exist_ok=True)
    transport = {"type": "file", "log_file_path": str(folder / "event"), "append": False}
    return {
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(transport),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "maestro-test",
    }


def openlineage_events(folder: Path) -> list[dict]:
    """The events the file transport wrote, each checked against `OPENLINEAGE_RUN_EVENT`."""
    import json

    import jsonschema

    validator = jsonschema.Draft202012Validator(
        OPENLINEAGE_RUN_EVENT, format_checker=jsonschema.FormatChecker()
    )
    events = [json.loads(p.read_text()) for p in sorted(folder.glob("event*"))]
    for event in events:
        validator.validate(event)
    return events


def lineage_path(events: list[dict], start: tuple[str, str], end: tuple[str, str]) -> list[str]:
    """The jobs on a path of COMPLETE events from dataset `start` to dataset `end` (each a
    (namespace, name)), joined as a lineage tool joins them: by name; [] when none joins."""
    edges: dict[tuple[str, str], list[tuple[str, tuple[str, str]]]] = {}
    for event in events:
        if event.get("eventType") != "COMPLETE":
            continue
        for read in event.get("inputs", []):
            for wrote in event.get("outputs", []):
                edge = (event["job"]["name"], (wrote["namespace"], wrote["name"]))
                edges.setdefault((read["namespace"], read["name"]), []).append(edge)
    paths: dict[tuple[str, str], list[str]] = {start: []}
    frontier = [start]
    while frontier:
        here = frontier.pop(0)
        for job, there in edges.get(here, []):
            if there not in paths:
                paths[there] = [*paths[here], job]
                frontier.append(there)
    return paths.get(end, [])

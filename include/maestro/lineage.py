"""Lineage in OpenLineage's terms: what each task of the lifecycle read and wrote, as datasets
named by OpenLineage's naming conventions (namespace + name), so that a lineage tool joins the
chain source -> snapshot -> feature view -> training set -> logged model -> model version ->
deployment -> monitoring run by name.

Only the datasets are decided here, from the handles tasks pass each other; the orchestration
layer hands them to Airflow's hook lineage collector, and Airflow's OpenLineage provider puts
them in the tasks' run events (`maestro.orchestration.lineage`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from maestro.config import Settings
from maestro.handles import CandidateVersion, MonitorVerdict, TrainingRun
from maestro.spec import ModelSpec
from maestro.spec.sources import DemoSource, SqlSource

Value = str | int | float | bool
URI_PREFIX = "maestro://lineage/"


@dataclass(frozen=True)
class Dataset:
    """One OpenLineage dataset: `version` becomes its `datasetVersion` facet, `properties` its
    `maestro` facet."""

    namespace: str
    name: str
    version: str | None = None
    properties: dict[str, Value] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """The Airflow asset URI carrying it to the OpenLineage provider."""
        return f"{URI_PREFIX}{quote(self.namespace, safe='')}/{quote(self.name, safe='/')}"

    def extra(self) -> dict[str, Any]:
        return {"version": self.version, "properties": dict(self.properties)}

    @classmethod
    def from_asset(cls, uri: str, extra: dict[str, Any]) -> Dataset:
        namespace, _, name = uri.removeprefix(URI_PREFIX).partition("/")
        return cls(
            unquote(namespace), unquote(name), extra.get("version"), extra.get("properties", {})
        )


Lineage = tuple[list[Dataset], list[Dataset]]  # what a task read, what it wrote


# database URL schemes as OpenLineage's SQL integrations name their servers
SCHEMES = {"postgresql": "postgres", "mariadb": "mysql"}


def _redacted(url: str) -> str:
    """A store's URL as a namespace: scheme (without a driver), host and port, never a user or
    password."""
    parts = urlsplit(url)
    scheme = parts.scheme.split("+")[0]
    port = f":{parts.port}" if parts.port else ""
    return f"{SCHEMES.get(scheme, scheme)}://{parts.hostname or ''}{port}"


def sources(
    spec: ModelSpec, settings: Settings, connection_url: str | None = None
) -> list[Dataset]:
    """The datasets a spec's source reads: the file or object, or the tables of the SQL
    statement (`connection_url`: the database's URL, for its namespace)."""
    source = spec.source
    if isinstance(source, DemoSource):
        return [Dataset("maestro://demo", f"{spec.name}/seed={source.seed}")]
    if isinstance(source, SqlSource):
        return _tables(source)
    if source.in_object_storage:
        return [Dataset(*_file(source.path))]
    return [Dataset("file", str(spec.source_path(settings)))]


def _file(path: str) -> tuple[str, str]:
    """A file's namespace and name: `file` and its path, or an object's `scheme://bucket` and
    key."""
    if "://" not in path:
        return "file", path
    parts = urlsplit(path)
    return f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/")


def _tables(source: SqlSource) -> list[Dataset]:
    """The tables a SQL source's statement reads, named `database.[schema.]table` in the
    namespace of its server (`postgres://host:port`, `mysql://host:port`), as OpenLineage's
    SQL integrations name them."""
    from openlineage_sql import parse
    from sqlalchemy import make_url

    if source.conn_id is not None:
        from maestro.data.connections import get_connection, sqlalchemy_url

        url = sqlalchemy_url(get_connection(source.conn_id, "source.conn_id"), "source.conn_id")
    else:
        url = make_url(os.environ.get(str(source.connection_env), "sql://unknown"))
    namespace = _redacted(url.render_as_string(hide_password=True))
    parsed = parse([source.query])
    tables = sorted({t.qualified_name for t in parsed.in_tables}) if parsed else []
    return [Dataset(namespace, ".".join(p for p in (url.database, table) if p)) for table in tables]


def snapshot(run: TrainingRun) -> Dataset:
    data = run.data
    window = {"rows": data["rows"], "start": data["start"], "end": data["end"]}
    return Dataset(*_file(str(data["path"])), version=str(data["hash"]), properties=window)


def feature_view(run: TrainingRun) -> Dataset:
    features = run.features
    if features is None:
        raise ValueError(f"{run.model}: the run has no feature view before materialize_features")
    window = {"start": features.materialized_start, "end": features.materialized_end}
    # as Feast's own OpenLineage emitter names it (`<namespace>/<project>`, the project of
    # feature_repo/), so that its events join this chain where someone switches it on
    namespace = f"{os.environ.get('AIRFLOW__OPENLINEAGE__NAMESPACE', 'default')}/maestro"
    return Dataset(namespace, features.feature_views[0], properties=window)


def training_set(folder: str, splits: dict[str, int] | None = None) -> Dataset:
    return Dataset("file", folder, properties=dict(splits or {}))


def _mlflow(settings: Settings) -> str:
    uri = settings.tracking_uri
    return _redacted(uri) if "://" in uri and not uri.startswith("sqlite") else f"mlflow+{uri}"


def logged_model(settings: Settings, run: TrainingRun) -> Dataset:
    return Dataset(
        _mlflow(settings), str(run.logged_model_uri), properties={"run_id": str(run.model_run_id)}
    )


def model_version(settings: Settings, model: str, version: str) -> Dataset:
    return Dataset(_mlflow(settings), f"models/{model}", version=version)


def deployment(model: str, version: str, done: dict[str, Any]) -> Dataset:
    """A model's serving stack: the server (or Kubernetes service) that answers for it."""
    details = {k: v for k, v in done.items() if isinstance(v, str | int | float | bool)}
    return Dataset(
        _redacted(str(done["url"])), f"serving/{model}", version=version, properties=details
    )


def prediction_log(settings: Settings, model: str) -> Dataset:
    """The log a model's server writes its predictions to and the monitoring job reads."""
    location = settings.prediction_log_location
    if "://" in location:
        return Dataset(_redacted(location), f"prediction_log/{model}")
    return Dataset("file", f"{location}/{model}")


def deployed(settings: Settings, model: str, done: dict[str, Any]) -> Lineage:
    """A deployment read the version and wrote the serving stack that logs its predictions."""
    version = str(done["version"])
    return [model_version(settings, model, version)], [
        deployment(model, version, done),
        prediction_log(settings, model),
    ]


def monitored(settings: Settings, verdict: MonitorVerdict) -> Lineage:
    """A monitoring run read the champion's logged window and wrote its report run."""
    inputs = [
        prediction_log(settings, verdict.model),
        model_version(settings, verdict.model, verdict.version),
    ]
    return inputs, [monitoring_run(settings, verdict)] if verdict.run_id else []


def monitoring_run(settings: Settings, verdict: MonitorVerdict) -> Dataset:
    properties = {"status": verdict.status, "rows": verdict.rows, "window_end": verdict.window_end}
    return Dataset(_mlflow(settings), f"runs/{verdict.run_id}", properties=properties)


def training_stage(stage: str, before: Any, after: Any, settings: Settings) -> Lineage:
    """What a stage of the training DAG read and wrote, from the handle it got and returned."""
    if stage == "validate_data":
        return [snapshot(before)], []
    if stage == "materialize_features":
        return [snapshot(before)], [feature_view(after)]
    if stage == "build_training_set":
        return [feature_view(before)], [training_set(after.training_set, after.splits)]
    if stage == "finish_tuning":
        return [training_set(before.training_set)], []
    if stage == "train_final":
        return [training_set(before.training_set)], [logged_model(settings, after)]
    if stage == "register":
        return [logged_model(settings, before)], [
            model_version(settings, after.model, after.version)
        ]
    if isinstance(before, CandidateVersion):  # the evaluation: gates, card and verdict
        return [
            model_version(settings, before.model, before.version),
            training_set(before.training_set),
        ], []
    return [], []

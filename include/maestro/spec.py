"""Declarative model specs: a new model is one YAML file, validated field by field.

Column names are normalised on ingest (lower case, runs of other characters become `_`),
so `native-country` in a CSV is `native_country` in a spec.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from maestro.config import Settings
from maestro.errors import BadInput


class SpecError(BadInput):
    """A model spec that cannot be used; the message names the file and the field."""


def normalise_name(column: str) -> str:
    """A source column's name as ingest reads it: lower case, runs of other characters `_`."""
    return re.sub(r"[^0-9a-z]+", "_", column.strip().lower()).strip("_")


def _column_name(name: str) -> str:
    """A column named as ingest names it (what else could it match?). This also keeps every
    name that reaches generated code (`feature_repo/`) free of quotes, spaces and newlines."""
    if normalise_name(name) != name:
        raise ValueError(
            f"{name!r} is not a column name as ingest reads it (lower case letters, digits, "
            f"single underscores): write {normalise_name(name)!r}"
        )
    return name


Column = Annotated[str, AfterValidator(_column_name)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CsvSource(_Strict):
    format: Literal["csv"]
    path: str
    na_values: list[str] = []
    encoding: str = "utf-8"


class ParquetSource(_Strict):
    format: Literal["parquet"]
    path: str


class SqlSource(_Strict):
    """One read-only statement (a SELECT), run in a read-only transaction."""

    format: Literal["sql"]
    query: str
    connection_env: str = Field(
        pattern=r"^[A-Z][A-Z0-9_]*$",
        description="Name of the environment variable holding the SQLAlchemy URL.",
    )

    @field_validator("connection_env")
    @classmethod
    def _a_source_variable(cls, name: str) -> str:
        """The platform's own settings hold its stores' credentials: not a data source."""
        if name.startswith(PLATFORM_VARIABLES) and not name.startswith("MAESTRO_SOURCE_"):
            raise ValueError(
                f"{name} is one of the platform's own settings "
                f"({', '.join(p + '*' for p in PLATFORM_VARIABLES)}); name a variable of "
                "its own, e.g. MAESTRO_SOURCE_WAREHOUSE_URL"
            )
        return name


PLATFORM_VARIABLES = ("AIRFLOW", "MAESTRO_", "MLFLOW_", "FEAST_")


class DemoSource(_Strict):
    """The project's own synthetic data (see `maestro.data.synthetic`)."""

    format: Literal["demo"]
    rows: int = Field(20_000, ge=100)
    seed: int = 7
    drift: float = Field(0.0, ge=0.0, le=1.0)
    bias: float = Field(0.0, ge=0.0, le=1.0)
    noise: float = Field(0.0, ge=0.0, le=1.0)


Source = Annotated[
    CsvSource | ParquetSource | SqlSource | DemoSource, Field(discriminator="format")
]


class EntitySpec(_Strict):
    key: Column
    type: Literal["int", "string"] = "int"
    synthesize: bool = Field(False, description="Number rows 1..n when the data has no key.")


class TimestampSpec(_Strict):
    column: Column = "event_timestamp"
    # How to build the timestamp when the data has none: from a date and an hour column...
    from_date: Column | None = None
    from_hour: Column | None = None
    # ...or by spacing rows evenly from a start (rows keep file order).
    synthesize_start: str | None = None
    synthesize_every: str = "1h"

    @model_validator(mode="after")
    def _one_way(self) -> TimestampSpec:
        if self.from_hour and not self.from_date:
            raise ValueError("from_hour needs from_date")
        if self.from_date and self.synthesize_start:
            raise ValueError("give either from_date or synthesize_start, not both")
        return self


class FeatureSpec(_Strict):
    name: Column
    type: Literal["int", "float", "category"]
    min: float | None = None
    max: float | None = None
    allowed: list[str] | None = None
    max_null_fraction: float = Field(0.0, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _consistent(self) -> FeatureSpec:
        if self.type == "category" and (self.min is not None or self.max is not None):
            raise ValueError("min/max apply to numeric features only")
        if self.type != "category" and self.allowed is not None:
            raise ValueError("allowed applies to category features only")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is greater than max {self.max}")
        return self


class TargetSpec(_Strict):
    name: Column
    positive: str | None = Field(None, description="Positive class label (classification).")


class MetricSpec(_Strict):
    name: Literal["roc_auc", "accuracy", "f1", "log_loss", "rmse", "mae", "r2"]
    direction: Literal["maximize", "minimize"]


class ParamSpec(_Strict):
    type: Literal["int", "float", "categorical"]
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: list[str | int | float | bool] | None = None

    @model_validator(mode="after")
    def _possible(self) -> ParamSpec:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical parameter needs a non-empty choices list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"{self.type} parameter needs low and high")
        if self.low > self.high:
            raise ValueError(f"impossible range: low {self.low} > high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log scale needs low > 0, got {self.low}")
        if self.type == "int" and int(self.low) != self.low:
            raise ValueError(f"int parameter needs whole bounds, got low {self.low}")
        return self


Family = Literal["lightgbm", "logistic_regression", "ridge", "random_forest"]
CLASSIFIERS = {"lightgbm", "logistic_regression", "random_forest"}
REGRESSORS = {"lightgbm", "ridge", "random_forest"}
CLASSIFICATION_METRICS = {"roc_auc", "accuracy", "f1", "log_loss"}
REGRESSION_METRICS = {"rmse", "mae", "r2"}


class SplitSpec(_Strict):
    validation: float = Field(0.15, gt=0.0, lt=0.5)
    test: float = Field(0.15, gt=0.0, lt=0.5)


class WindowSpec(_Strict):
    """Which rows a run trains on: absolute bounds and/or a look-back from the run's end."""

    start: str | None = None
    end: str | None = None
    lookback_days: int | None = Field(None, gt=0)


class Bound(_Strict):
    """A value threshold on one metric: at least `min` and/or at most `max`."""

    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _some(self) -> Bound:
        if self.min is None and self.max is None:
            raise ValueError("a threshold needs min, max or both")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"impossible threshold: min {self.min} > max {self.max}")
        return self


class SliceSpec(_Strict):
    """An extra slice for sliced metrics: a feature, cut into bands when numeric."""

    feature: Column
    bins: list[float] | None = Field(None, min_length=2, description="Band edges (numeric).")

    @model_validator(mode="after")
    def _increasing(self) -> SliceSpec:
        if self.bins is not None and sorted(set(self.bins)) != self.bins:
            raise ValueError(f"bins must be strictly increasing, got {self.bins}")
        return self


class FairnessSpec(_Strict):
    """Fairness gates, per protected attribute (groups smaller than `min_group_size` are
    reported but not judged: their rates are too noisy to gate on)."""

    demographic_parity_difference_max: float = Field(0.1, ge=0.0, le=1.0)
    equalized_odds_difference_max: float = Field(0.1, ge=0.0, le=1.0)
    selection_rate_ratio_min: float = Field(0.8, ge=0.0, le=1.0)  # the four-fifths rule
    error_ratio_max: float = Field(1.25, ge=1.0)  # regression: worst group's error / overall
    min_group_size: int = Field(30, ge=1)


class GovernanceSpec(_Strict):
    """What a challenger must pass before a human is asked, and who that human is."""

    intended_use: str = ""
    thresholds: dict[str, Bound] = {}
    tolerance: float = Field(
        0.01, ge=0.0, description="How much worse than the champion the primary metric may be."
    )
    slices: list[SliceSpec] = []
    fairness: FairnessSpec = Field(default_factory=FairnessSpec)
    decision_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    latency_budget_ms: float = Field(50.0, gt=0.0)
    approvers: list[str] = Field([], description="Airflow users who may decide; empty: any.")
    approval_timeout_hours: float = Field(72.0, gt=0.0)
    keep_versions: int = Field(5, ge=2, description="Versions kept before older ones are archived.")


class DriftSpec(_Strict):
    """How a column is judged drifted. `auto` is Evidently's default choice per column (K-S or
    chi-square/z p-values up to 1,000 reference rows; beyond, normed Wasserstein distance for
    numbers and Jensen-Shannon distance for categories, each at 0.1)."""

    num_method: Literal["auto", "wasserstein", "ks", "psi", "jensenshannon"] = "auto"
    cat_method: Literal["auto", "jensenshannon", "chisquare", "psi"] = "auto"
    threshold: float | None = Field(None, gt=0.0, description="Default: the method's own.")
    share: float = Field(
        0.5, gt=0.0, le=1.0, description="Share of drifted columns that means dataset drift."
    )


class NotifySpec(_Strict):
    """Who hears about drift, failed runs and approvals waiting too long: a webhook (its URL,
    or `${VAR}` naming an environment variable) and/or e-mail addresses."""

    webhook: str | None = None
    email: list[str] = []
    approval_wait_hours: float = Field(24.0, gt=0.0)


class MonitoringSpec(_Strict):
    """The model's monitoring job (`monitor_<model>`) and drift-triggered retraining."""

    enabled: bool = True
    schedule: str | None = "@daily"
    window_hours: float = Field(24.0, gt=0.0, description="Production data judged per run.")
    min_rows: int = Field(200, ge=1, description="Fewer logged rows: nothing is judged.")
    reference: str = Field(
        "champion",
        description="`champion`: the champion's own training set (its lineage); or a parquet path.",
    )
    drift: DriftSpec = Field(default_factory=DriftSpec)
    performance: dict[str, Bound] = Field(
        {}, description="Limits on metrics computed from ground truth, once labels are known."
    )
    min_labels: int = Field(50, ge=1, description="Fewer labelled rows: performance not judged.")
    retrain: bool = Field(True, description="A drift or performance verdict starts training.")
    cooldown_hours: float = Field(24.0, ge=0.0)
    champion_max_age_days: float = Field(90.0, gt=0.0)
    notify: NotifySpec = Field(default_factory=NotifySpec)


class DataChecks(_Strict):
    min_rows: int = Field(100, ge=1)
    max_rows: int | None = None


class ModelSpec(_Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    description: str = ""
    owner: str = "maestro"
    task: Literal["binary_classification", "regression"]
    source: Source
    entity: EntitySpec
    timestamp: TimestampSpec = Field(default_factory=TimestampSpec)
    features: list[FeatureSpec] = Field(min_length=1)
    drop: list[Column] = Field([], description="Source columns that must never be features.")
    target: TargetSpec
    protected_attributes: list[Column] = []
    metric: MetricSpec
    search_space: dict[Family, dict[str, ParamSpec]] = Field(min_length=2)
    trials: int = Field(20, ge=1)
    workers: int | None = Field(None, ge=1, le=16)
    pruning: bool = Field(
        True, description="Stop unpromising LightGBM trials early (Optuna's median pruner)."
    )
    timeout_minutes: int = Field(60, ge=1)
    schedule: str | None = None
    window: WindowSpec = Field(default_factory=WindowSpec)
    split: SplitSpec = Field(default_factory=SplitSpec)
    data_checks: DataChecks = Field(default_factory=DataChecks)
    governance: GovernanceSpec = Field(default_factory=GovernanceSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    tags: list[str] = []

    @model_validator(mode="after")
    def _coherent(self) -> ModelSpec:
        names = [f.name for f in self.features]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"features: duplicate names {dupes}")
        if self.target.name in names:
            raise ValueError(f"target.name: {self.target.name!r} is also a feature")
        for role, column in (
            ("entity.key", self.entity.key),
            ("timestamp.column", self.timestamp.column),
        ):
            if column in names or column == self.target.name:
                raise ValueError(f"{role}: {column!r} is also a feature or the target")
        leaked = sorted(set(self.drop) & set(names))
        if leaked:
            raise ValueError(f"features: {leaked} are listed in drop and must not be features")
        unknown = sorted(set(self.protected_attributes) - set(names))
        if unknown:
            raise ValueError(f"protected_attributes: {unknown} are not features")
        classification = self.task == "binary_classification"
        if classification != (self.metric.name in CLASSIFICATION_METRICS):
            raise ValueError(f"metric.name: {self.metric.name!r} does not fit task {self.task!r}")
        allowed = CLASSIFIERS if classification else REGRESSORS
        wrong = sorted(set(self.search_space) - allowed)
        if wrong:
            raise ValueError(f"search_space: families {wrong} do not support task {self.task!r}")
        metrics = CLASSIFICATION_METRICS if classification else REGRESSION_METRICS
        unknown = sorted(set(self.governance.thresholds) - metrics)
        if unknown:
            raise ValueError(
                f"governance.thresholds: {unknown} are not metrics of {self.task!r} "
                f"(known: {sorted(metrics)})"
            )
        unknown = sorted(set(self.monitoring.performance) - metrics)
        if unknown:
            raise ValueError(
                f"monitoring.performance: {unknown} are not metrics of {self.task!r} "
                f"(known: {sorted(metrics)})"
            )
        unsliceable = sorted({s.feature for s in self.governance.slices} - set(names))
        if unsliceable:
            raise ValueError(f"governance.slices: {unsliceable} are not features")
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def categorical_features(self) -> list[str]:
        return [f.name for f in self.features if f.type == "category"]

    @property
    def feature_service(self) -> str:
        return f"{self.name}_v1"

    @property
    def feature_view(self) -> str:
        return f"{self.name}_features"

    def source_path(self, settings: Settings) -> Path | None:
        """The file behind a CSV or parquet source, `${VARS}` expanded, relative to the project;
        SpecError when it lies outside the data folders (`MAESTRO_DATA_ROOTS`)."""
        if not isinstance(self.source, CsvSource | ParquetSource):
            return None
        path = Path(os.path.expandvars(self.source.path))
        path = (path if path.is_absolute() else settings.project_dir / path).resolve()
        roots = settings.source_roots
        if not any(path.is_relative_to(root) for root in roots):
            raise SpecError(
                f"{settings.specs_dir / self.name}.yaml: source.path: {path} is outside the "
                f"data folders ({', '.join(map(str, roots))}); add its folder to "
                "MAESTRO_DATA_ROOTS"
            )
        return path


def _format_errors(path: Path, error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"] if not re.fullmatch(r"[a-z]+-[a-z]+", str(p)))
        msg = item["msg"].removeprefix("Value error, ")
        parts.append(f"{where or '(top level)'}: {msg}")
    return f"{path}: invalid model spec: " + "; ".join(parts)


def load_spec(path: str | Path) -> ModelSpec:
    """Read and validate one spec file; raise `SpecError` naming the file and field."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SpecError(f"{path}: model spec file not found") from exc
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise SpecError(f"{path}: a model spec must be a mapping of fields")
    try:
        spec = ModelSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(_format_errors(path, exc)) from exc
    if spec.name != path.stem:
        raise SpecError(f"{path}: name: {spec.name!r} must match the file name {path.stem!r}")
    return spec


def spec_paths(settings: Settings) -> list[Path]:
    return sorted(settings.specs_dir.glob("*.yaml"))


def loadable_specs(settings: Settings) -> list[ModelSpec]:
    """Every spec that loads; a broken one is logged and left out, so that it hides only its
    own DAGs, never the other models'."""
    import logging

    specs = []
    for path in spec_paths(settings):
        try:
            specs.append(load_spec(path))
        except SpecError as error:
            logging.getLogger(__name__).error("skipping model spec: %s", error)
    return specs


def get_spec(name: str, settings: Settings) -> ModelSpec:
    path = settings.specs_dir / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in spec_paths(settings)) or "none"
        raise SpecError(f"{path}: no model spec named {name!r} (known: {known})")
    return load_spec(path)

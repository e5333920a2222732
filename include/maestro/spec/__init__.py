"""Declarative model specs: a new model is one YAML file, validated field by field. The
sections of a spec are in `sections` and `sources`; here, the whole spec and its loading.

Column names are normalised on ingest (lower case, runs of other characters become `_`),
so `native-country` in a CSV is `native_country` in a spec.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from maestro.config import Settings
from maestro.errors import BadInput
from maestro.spec.fields import Column, Strict
from maestro.spec.sections import (
    BUILT_IN,
    CLASSIFICATION_METRICS,
    CLASSIFIERS,
    MULTICLASS_LABEL_METRICS,
    MULTICLASS_METRICS,
    REGRESSION_METRICS,
    REGRESSORS,
    DataChecks,
    EntitySpec,
    FeatureSpec,
    GovernanceSpec,
    MetricSpec,
    MonitoringSpec,
    ParamSpec,
    SplitSpec,
    TargetSpec,
    TimestampSpec,
    TrainerSpec,
    WindowSpec,
)
from maestro.spec.sources import CsvSource, ParquetSource, Source


class SpecError(BadInput):
    """A model spec that cannot be used; the message names the file and the field."""


class ModelSpec(Strict):
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    description: str = ""
    owner: str = "maestro"
    task: Literal["binary_classification", "multiclass_classification", "regression"]
    source: Source
    entity: EntitySpec
    timestamp: TimestampSpec = Field(default_factory=TimestampSpec)
    features: list[FeatureSpec] = Field(min_length=1)
    drop: list[Column] = Field([], description="Source columns that must never be features.")
    target: TargetSpec
    protected_attributes: list[Column] = []
    metric: MetricSpec
    trainers: dict[Column, TrainerSpec] = Field(
        {}, description="Your own training functions, by the family name search_space uses."
    )
    search_space: dict[str, dict[str, ParamSpec]] = Field(min_length=1)
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
        metrics = self.task_metrics
        if self.metric.name not in metrics:
            raise ValueError(
                f"metric.name: {self.metric.name!r} does not fit task {self.task!r} "
                f"(its metrics: {', '.join(sorted(metrics))})"
            )
        if not self.multiclass and self.target.classes is not None:
            raise ValueError("target.classes: only a multiclass target lists its classes")
        if self.multiclass and self.target.classes is None:
            raise ValueError(
                "target.classes: a multiclass target lists its classes (the labels as the data "
                "has them), in the order every version's probabilities will come in"
            )
        if self.target.classes and len(set(self.target.classes)) < len(self.target.classes):
            raise ValueError(f"target.classes: {self.target.classes} repeats a class")
        if self.task != "binary_classification" and self.target.positive is not None:
            raise ValueError("target.positive: only a binary target has a positive class")
        if not self.multiclass and self.governance.min_class_recall:
            raise ValueError("governance.min_class_recall: applies to multiclass tasks only")
        shadowed = sorted(set(self.trainers) & BUILT_IN)
        if shadowed:
            raise ValueError(f"trainers: {shadowed} are names of built-in families; pick others")
        unknown = sorted(set(self.search_space) - BUILT_IN - set(self.trainers))
        if unknown:
            raise ValueError(
                f"search_space: {unknown} are neither built-in families "
                f"({', '.join(sorted(BUILT_IN))}) nor trainers declared under `trainers`"
            )
        allowed = (CLASSIFIERS if self.classification else REGRESSORS) | set(self.trainers)
        wrong = sorted(set(self.search_space) - allowed)
        if wrong:
            raise ValueError(f"search_space: families {wrong} do not support task {self.task!r}")
        unused = sorted(set(self.trainers) - set(self.search_space))
        if unused:
            raise ValueError(
                f"trainers: {unused} are declared but not in search_space (give each its "
                "hyperparameters there, or {} for none)"
            )
        unknown = sorted(set(self.governance.thresholds) - metrics)
        if unknown:
            raise ValueError(
                f"governance.thresholds: {unknown} are not metrics of {self.task!r} "
                f"(known: {sorted(metrics)})"
            )
        judged = MULTICLASS_LABEL_METRICS if self.multiclass else metrics
        unknown = sorted(set(self.monitoring.performance) - judged)
        if unknown and self.multiclass:
            raise ValueError(
                f"monitoring.performance: {unknown} need probabilities, and the prediction log "
                "keeps a multiclass model's predicted class: limit accuracy, f1_macro or "
                "f1_weighted"
            )
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
    def classification(self) -> bool:
        return self.task != "regression"

    @property
    def multiclass(self) -> bool:
        return self.task == "multiclass_classification"

    @property
    def classes(self) -> list[str]:
        """A multiclass target's classes, in the order of its codes and probabilities."""
        return self.target.classes or []

    @property
    def task_metrics(self) -> set[str]:
        if self.multiclass:
            return MULTICLASS_METRICS
        return CLASSIFICATION_METRICS if self.classification else REGRESSION_METRICS

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
        """The local file behind a CSV or parquet source, `${VARS}` expanded, relative to the
        project (None for object storage); SpecError when it lies outside the data folders (`MAESTRO_DATA_ROOTS`)."""
        if not isinstance(self.source, CsvSource | ParquetSource) or self.source.in_object_storage:
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


def _sentence(item: Any) -> str:
    """One validation error as a sentence about the spec, not in the validator's wording."""
    kind, ctx, given = item["type"], item.get("ctx", {}), item.get("input")
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        return "is not a field here (check its spelling and indentation)"
    if kind == "too_short":
        least = ctx.get("min_length")
        return f"needs at least {least} entr{'y' if least == 1 else 'ies'}, got none"
    if kind == "literal_error":
        return f"{given!r} is not one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch" and item["loc"][-1] == "function":
        return f"{given!r} is not of the form package.module:function"
    if kind == "string_pattern_mismatch":
        return f"{given!r} does not match the pattern {ctx.get('pattern')}"
    limits = {
        "greater_than": "greater than",
        "greater_than_equal": "at least",
        "less_than": "less than",
        "less_than_equal": "at most",
    }
    if kind in limits:
        bound = next(iter(ctx.values()), "?")
        shown = f"{bound:g}" if isinstance(bound, float) else bound
        return f"must be {limits[kind]} {shown}, got {given!r}"
    if kind.endswith(("_type", "_parsing")):
        wanted = kind.removesuffix("_type").removesuffix("_parsing").replace("_", " ")
        return f"must be {'an' if wanted[0] in 'aeiou' else 'a'} {wanted}, got {given!r}"
    return str(item["msg"]).removeprefix("Value error, ")


def _format_errors(path: Path, error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(p) for p in item["loc"] if not re.fullmatch(r"[a-z]+-[a-z]+", str(p)))
        parts.append(f"{where or '(top level)'}: {_sentence(item)}")
    return f"{path}: invalid model spec: " + "; ".join(parts)


def check_trainers(spec: ModelSpec, settings: Settings) -> None:
    """Every trainer a spec names lies in an allowed package and can be found, without running
    it (only its parent package is imported): SpecError naming the file and the field."""
    import importlib.util

    where = f"{settings.specs_dir / spec.name}.yaml"
    allowed = settings.trainer_package_names
    for name, trainer in spec.trainers.items():
        field = f"trainers.{name}.function"
        if trainer.module.split(".")[0] not in allowed:
            raise SpecError(
                f"{where}: {field}: {trainer.module!r} is outside the trainer packages "
                f"({', '.join(allowed)}); add its package to MAESTRO_TRAINER_PACKAGES"
            )
        try:
            found = importlib.util.find_spec(trainer.module)
        except ImportError as error:
            raise SpecError(
                f"{where}: {field}: module {trainer.module!r} cannot be imported: {error}"
            ) from error
        if found is None:
            raise SpecError(f"{where}: {field}: no module named {trainer.module!r}")


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
            spec = load_spec(path)
            check_trainers(spec, settings)
            specs.append(spec)
        except SpecError as error:
            logging.getLogger(__name__).error("skipping model spec: %s", error)
    return specs


def get_spec(name: str, settings: Settings) -> ModelSpec:
    path = settings.specs_dir / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(p.stem for p in spec_paths(settings)) or "none"
        raise SpecError(f"{path}: no model spec named {name!r} (known: {known})")
    spec = load_spec(path)
    check_trainers(spec, settings)
    return spec

"""The sections of a model spec: entity and time, features and target, the metric and the
search space, the split and window, governance (bounds, slices, fairness), monitoring."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from maestro.spec.fields import Column, Strict


class EntitySpec(Strict):
    key: Column
    type: Literal["int", "string"] = "int"
    synthesize: bool = Field(False, description="Number rows 1..n when the data has no key.")


class TimestampSpec(Strict):
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


class FeatureSpec(Strict):
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


class TargetSpec(Strict):
    name: Column
    positive: str | None = Field(None, description="Positive class label (binary).")
    classes: list[str] | None = Field(
        None,
        min_length=2,
        description="A multiclass target's classes (labels as the data has them), in the order "
        "every version's probabilities come in: one output contract across retraining.",
    )


class MetricSpec(Strict):
    name: Literal[
        "roc_auc",
        "accuracy",
        "f1",
        "log_loss",
        "f1_macro",
        "f1_weighted",
        "roc_auc_ovr",
        "rmse",
        "mae",
        "r2",
    ]
    direction: Literal["maximize", "minimize"]


class ParamSpec(Strict):
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


# The built-in families; a spec's `trainers` section adds its own under names of its choosing.
CLASSIFIERS = {"lightgbm", "xgboost", "catboost", "logistic_regression", "random_forest"}
REGRESSORS = {"lightgbm", "xgboost", "catboost", "ridge", "random_forest"}
BUILT_IN = CLASSIFIERS | REGRESSORS
TRAINER_FUNCTION = r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*$"


class TrainerSpec(Strict):
    """Your own training code: `function` is `package.module:function` (the contract is in the
    README), in one of the packages named by MAESTRO_TRAINER_PACKAGES (default `trainers`,
    the folder `include/trainers/`)."""

    function: Annotated[str, Field(pattern=TRAINER_FUNCTION)]
    requirements: list[str] = Field(
        [], description="pip requirements the trained model needs to load, beyond the core's."
    )

    @property
    def module(self) -> str:
        return self.function.split(":")[0]

    @property
    def attribute(self) -> str:
        return self.function.split(":")[1]


CLASSIFICATION_METRICS = {"roc_auc", "accuracy", "f1", "log_loss"}
MULTICLASS_LABEL_METRICS = {"accuracy", "f1_macro", "f1_weighted"}  # what labels alone define
MULTICLASS_METRICS = MULTICLASS_LABEL_METRICS | {"log_loss", "roc_auc_ovr"}
REGRESSION_METRICS = {"rmse", "mae", "r2"}


class SplitSpec(Strict):
    validation: float = Field(0.15, gt=0.0, lt=0.5)
    test: float = Field(0.15, gt=0.0, lt=0.5)


class WindowSpec(Strict):
    """Which rows a run trains on: absolute bounds and/or a look-back from the run's end."""

    start: str | None = None
    end: str | None = None
    lookback_days: int | None = Field(None, gt=0)


class Bound(Strict):
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


class SliceSpec(Strict):
    """An extra slice for sliced metrics: a feature, cut into bands when numeric."""

    feature: Column
    bins: list[float] | None = Field(None, min_length=2, description="Band edges (numeric).")

    @model_validator(mode="after")
    def _increasing(self) -> SliceSpec:
        if self.bins is not None and sorted(set(self.bins)) != self.bins:
            raise ValueError(f"bins must be strictly increasing, got {self.bins}")
        return self


class FairnessSpec(Strict):
    """Fairness gates, per protected attribute (groups smaller than `min_group_size` are
    reported but not judged: their rates are too noisy to gate on)."""

    demographic_parity_difference_max: float = Field(0.1, ge=0.0, le=1.0)
    equalized_odds_difference_max: float = Field(0.1, ge=0.0, le=1.0)
    selection_rate_ratio_min: float = Field(0.8, ge=0.0, le=1.0)  # the four-fifths rule
    error_ratio_max: float = Field(1.25, ge=1.0)  # regression: worst group's error / overall
    min_group_size: int = Field(30, ge=1)


class GovernanceSpec(Strict):
    """What a challenger must pass before a human is asked, and who that human is."""

    intended_use: str = ""
    thresholds: dict[str, Bound] = {}
    tolerance: float = Field(
        0.01, ge=0.0, description="How much worse than the champion the primary metric may be."
    )
    slices: list[SliceSpec] = []
    fairness: FairnessSpec = Field(default_factory=FairnessSpec)
    decision_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    min_class_recall: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Multiclass: every class's recall must reach this on the test split (a "
        "class absent from the split then fails); default: per-class recall is reported only.",
    )
    latency_budget_ms: float = Field(50.0, gt=0.0)
    approvers: list[str] = Field([], description="Airflow users who may decide; empty: any.")
    approval_timeout_hours: float = Field(72.0, gt=0.0)
    keep_versions: int = Field(5, ge=2, description="Versions kept before older ones are archived.")


class DriftSpec(Strict):
    """How a column is judged drifted. `auto` is Evidently's default choice per column (K-S or
    chi-square/z p-values up to 1,000 reference rows; beyond, normed Wasserstein distance for
    numbers and Jensen-Shannon distance for categories, each at 0.1)."""

    num_method: Literal["auto", "wasserstein", "ks", "psi", "jensenshannon"] = "auto"
    cat_method: Literal["auto", "jensenshannon", "chisquare", "psi"] = "auto"
    threshold: float | None = Field(None, gt=0.0, description="Default: the method's own.")
    share: float = Field(
        0.5, gt=0.0, le=1.0, description="Share of drifted columns that means dataset drift."
    )


class NotifySpec(Strict):
    """Who hears about drift, failed runs and approvals waiting too long: a webhook (its URL,
    or `${VAR}` naming an environment variable) and/or e-mail addresses."""

    webhook: str | None = None
    email: list[str] = []
    approval_wait_hours: float = Field(24.0, gt=0.0)


class MonitoringSpec(Strict):
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


class DataChecks(Strict):
    min_rows: int = Field(100, ge=1)
    max_rows: int | None = None

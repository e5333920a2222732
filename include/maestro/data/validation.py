"""Data validation: a Great Expectations 1.x suite derived from the model spec.

The suite runs in a file-backed GX context inside a scratch folder so that a run leaves
Data Docs HTML behind, which the caller publishes as an MLflow artifact.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from maestro.errors import BadInput
from maestro.spec import ModelSpec


class ValidationFailed(BadInput):
    """The data broke the suite; the message lists every failed expectation in one line."""


@dataclass(frozen=True)
class ValidationReport:
    success: bool
    evaluated: int
    failed: list[str]
    docs_dir: Path

    def summary(self) -> str:
        if self.success:
            return f"all {self.evaluated} expectations passed"
        return f"{len(self.failed)} of {self.evaluated} expectations failed: " + "; ".join(
            self.failed
        )


def build_expectations(spec: ModelSpec) -> list:
    """The suite's expectations, straight from the spec's declarations."""
    import great_expectations as gx

    E = gx.expectations
    key, ts, target = spec.entity.key, spec.timestamp.column, spec.target.name
    columns = [key, ts, *spec.feature_names, target]
    out = [
        E.ExpectTableColumnsToMatchSet(column_set=columns, exact_match=True),
        E.ExpectTableRowCountToBeBetween(
            min_value=spec.data_checks.min_rows, max_value=spec.data_checks.max_rows
        ),
        E.ExpectCompoundColumnsToBeUnique(column_list=[key, ts]),
        E.ExpectColumnValuesToNotBeNull(column=key),
        E.ExpectColumnValuesToNotBeNull(column=target),
    ]
    if spec.task == "binary_classification":
        out.append(E.ExpectColumnDistinctValuesToEqualSet(column=target, value_set=[0, 1]))
    for feature in spec.features:
        name = feature.name
        kinds = {
            "int": ["int64", "Int64"],
            "float": ["float64", "int64"],
            "category": ["object", "str"],
        }
        out.append(E.ExpectColumnValuesToBeInTypeList(column=name, type_list=kinds[feature.type]))
        out.append(
            E.ExpectColumnValuesToNotBeNull(column=name, mostly=1.0 - feature.max_null_fraction)
            if feature.max_null_fraction
            else E.ExpectColumnValuesToNotBeNull(column=name)
        )
        if feature.min is not None or feature.max is not None:
            out.append(
                E.ExpectColumnValuesToBeBetween(
                    column=name, min_value=feature.min, max_value=feature.max
                )
            )
        if feature.allowed is not None:
            out.append(E.ExpectColumnValuesToBeInSet(column=name, value_set=feature.allowed))
    return out


def _describe(result: Any) -> str:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k not in ("batch_id", "mostly")}
    target = kwargs.get("column") or kwargs.get("column_list") or ""
    observed = result.result.get("observed_value")
    unexpected = result.result.get("unexpected_count")
    detail = f"observed {observed!r}" if observed is not None else f"{unexpected} unexpected values"
    return f"{config.type}({target}) {detail}".replace("()", "")


def validate(frame: pd.DataFrame, spec: ModelSpec, workdir: Path) -> ValidationReport:
    """Run the spec's suite on `frame`, build Data Docs under `workdir`, and report."""
    import great_expectations as gx

    context = gx.get_context(mode="file", project_root_dir=str(workdir))
    context.variables.progress_bars = {"globally": False}  # type: ignore[assignment]
    source = context.data_sources.add_or_update_pandas(name="maestro")
    asset = source.add_dataframe_asset(name=spec.name)
    batch = asset.add_batch_definition_whole_dataframe(name="snapshot")
    suite = context.suites.add_or_update(gx.ExpectationSuite(name=f"{spec.name}_suite"))
    for expectation in build_expectations(spec):
        suite.add_expectation(expectation)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(data=batch, suite=suite, name=f"{spec.name}_validation")
    )
    checkpoint = context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=f"{spec.name}_checkpoint",
            validation_definitions=[definition],
            actions=[gx.checkpoint.UpdateDataDocsAction(name="docs")],
            result_format={"result_format": "SUMMARY"},
        )
    )
    run = checkpoint.run(batch_parameters={"dataframe": frame})
    results = [r for v in run.run_results.values() for r in v.results]
    failed = [_describe(r) for r in results if not r.success]
    docs = Path(workdir) / "gx" / "uncommitted" / "data_docs" / "local_site"
    return ValidationReport(not failed, len(results), failed, docs)

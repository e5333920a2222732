"""The training DAG's evaluation stages: judge a registered challenger.

`evaluate`, `validate_serving`, `explain` and `verdict` run as the evaluation task group and
keep their results as JSON artifacts of one MLflow evaluation run, passing only run ids. The
verdict is a set of tags on the model version, so the audit trail lives in the registry.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from maestro import tracking
from maestro.config import Settings
from maestro.governance.model_card import approval_request, card_facts, load_result, publish_card
from maestro.handles import CandidateVersion
from maestro.registry import champion_version
from maestro.spec import get_spec
from maestro.vocabulary import FAILED, PASSED

log = logging.getLogger(__name__)
SAMPLE_ROWS = 50  # rows the serving check scores and times
EXPLAIN_ROWS = 2000


def _version_uri(handle: CandidateVersion) -> str:
    return f"models:/{handle.model}/{handle.version}"


def _test_split(handle: CandidateVersion, settings: Settings) -> Any:
    from maestro.training.stages import load_split

    return load_split(handle, "test")


def evaluate(handle: CandidateVersion, settings: Settings) -> CandidateVersion:
    """Metrics, champion comparison, slices and fairness on the test split."""
    from maestro.governance.gates import evaluate_challenger
    from maestro.models import load_version, scores

    spec = get_spec(handle.model, settings)
    test = _test_split(handle, settings)
    X = test[spec.feature_names]
    model = load_version(_version_uri(handle))
    y_score = scores(model, spec, X)
    champion = champion_version(settings, spec.name)
    champion_score = None
    if champion is not None and str(champion.version) != str(handle.version):
        champion_model = load_version(f"models:/{spec.name}/{champion.version}")
        champion_score = scores(champion_model, spec, X)
    result = evaluate_challenger(spec, test, y_score, champion_score)
    if result["undefined_classes"]:
        log.warning(
            "%s version %s: classes %s have no rows in the test split: their metrics are undefined",
            spec.name,
            handle.version,
            ", ".join(result["undefined_classes"]),
        )
    result["champion_version"] = str(champion.version) if champion_score is not None else None
    run_id = tracking.child_run(settings, handle.pipeline_run_id, "evaluate", "evaluate")
    mlc = tracking.client(settings)
    mlc.log_dict(run_id, result, "evaluation/metrics.json")
    mlc.log_batch(run_id, metrics=_metric_entities(result["metrics"], "test_"))
    mlc.set_tag(run_id, "model_version", handle.version)
    return handle.updated(evaluation_run_id=run_id)


def _metric_entities(values: dict[str, float], prefix: str) -> list:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(f"{prefix}{k}", float(v), now, 0) for k, v in values.items()]


def validate_serving(handle: CandidateVersion, settings: Settings) -> CandidateVersion:
    """Load the version by its registry URI in a fresh process; compare scores, time rows."""
    from maestro.governance.serving_check import check_in_fresh_process
    from maestro.models import load_version, scores

    spec = get_spec(handle.model, settings)
    rows = _test_split(handle, settings)[spec.feature_names].head(SAMPLE_ROWS)
    offline = scores(load_version(_version_uri(handle)), spec, rows)
    result = check_in_fresh_process(_version_uri(handle), rows, offline, settings.tracking_uri)
    result["latency_budget_ms"] = spec.governance.latency_budget_ms
    tracking.client(settings).log_dict(handle.evaluation_run_id, result, "evaluation/serving.json")
    return handle


def serving_checks(result: dict) -> list[dict]:
    from dataclasses import asdict

    from maestro.governance.gates import Check

    if not result.get("loaded"):
        return [
            asdict(Check("serving:loads", False, None, "loads", result.get("error", "")[-300:]))
        ]
    budget = result["latency_budget_ms"]
    return [
        asdict(Check("serving:loads", True, result["load_seconds"], "loads", "seconds to load")),
        asdict(
            Check(
                "serving:predictions",
                result["max_abs_difference"] <= 1e-9,
                result["max_abs_difference"],
                "<= 1e-09",
                "largest difference from offline",
            )
        ),
        asdict(
            Check(
                "serving:latency_p95_ms",
                result["latency_p95_ms"] <= budget,
                result["latency_p95_ms"],
                f"<= {budget}",
                "single-row predictions",
            )
        ),
    ]


def explain(handle: CandidateVersion, settings: Settings) -> CandidateVersion:
    """Global SHAP importance: a table and a bar plot, as artifacts of the evaluation run."""
    from maestro.governance.explain import plot_importance, shap_importance
    from maestro.models import load_version

    spec = get_spec(handle.model, settings)
    test = _test_split(handle, settings).head(EXPLAIN_ROWS)
    model = load_version(_version_uri(handle))
    family = (
        tracking.client(settings)
        .get_model_version(handle.model, handle.version)
        .tags["best_family"]
    )
    features, truth = test[spec.feature_names], test[spec.target.name]
    table = shap_importance(model, spec, family, features, truth)
    mlc = tracking.client(settings)
    with tempfile.TemporaryDirectory(prefix="maestro-shap-") as tmp:
        table.to_csv(Path(tmp) / "shap_importance.csv", index=False)
        plot_importance(table, Path(tmp) / "shap_importance.png", f"{spec.name} v{handle.version}")
        mlc.log_artifacts(handle.evaluation_run_id, tmp, "explain")
    mlc.log_dict(
        handle.evaluation_run_id,
        {"importance": table.to_dict(orient="records")},
        "evaluation/importance.json",
    )
    return handle


def verdict(handle: CandidateVersion, settings: Settings) -> CandidateVersion:
    """Every check's result as tags on the version, the model card, and the description."""
    from maestro.governance.gates import failed_names

    run_id = handle.evaluation_run_id
    result = load_result(run_id, "metrics")
    serving = load_result(run_id, "serving")
    checks = result["checks"] + serving_checks(serving)
    failed = failed_names(checks)
    status = PASSED if not failed else FAILED
    mlc = tracking.client(settings)
    name, version = handle.model, handle.version
    facts = card_facts(handle, settings, result, serving, checks, status, failed)
    mlc.log_dict(run_id, facts, "evaluation/card_facts.json")
    publish_card(settings, facts, run_id)  # before the verdict tags: a decision amends the card
    tags = {
        "validation_status": status,
        "validation_failed": ",".join(failed) or "none",
        "validation_checks": str(len(checks)),
        "evaluation_run_id": run_id,
    }
    for check in checks:
        tags[f"check.{check['name']}"] = "pass" if check["passed"] else "FAIL"
    for key, value in tags.items():
        mlc.set_model_version_tag(name, version, key, value)
    mlc.set_terminated(run_id)  # the evaluation's last writer (a decision only adds to the card)
    judged = handle.updated(validation_status=status, failed_checks=failed)
    if status == PASSED:
        judged = judged.updated(approval_request=approval_request(settings, judged))
    return judged


def not_promoted(handle: CandidateVersion, settings: Settings) -> None:
    """The end of a run whose version failed a gate: say which, in the task's log; no approval
    is requested and no alias moves."""
    failed = ", ".join(handle.failed_checks)
    log.warning("%s version %s not promoted: failed %s", handle.model, handle.version, failed)

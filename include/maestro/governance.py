"""Governance: judge a registered challenger, record a human decision, promote or roll back.

The stages (`evaluate`, `validate_serving`, `explain`, `verdict`) run as the training DAG's
evaluation task group and keep their results as JSON artifacts of one MLflow evaluation run,
passing only run ids. Every verdict and decision is a tag on the model version, so the audit
trail lives in the registry; nothing reaches `champion` without `validation_status=passed`
and `approval=approved`.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from maestro import tracking
from maestro.config import Settings
from maestro.errors import BadInput
from maestro.spec import get_spec

CHAMPION = "champion"
PREVIOUS = "previous"
APPROVED, REJECTED = "approved", "rejected"
SAMPLE_ROWS = 50  # rows the serving check scores and times
EXPLAIN_ROWS = 2000

Handle = dict[str, Any]


class GovernanceError(BadInput):
    """A promotion, rollback or decision that the rules forbid; the message says which rule."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _version_uri(handle: Handle) -> str:
    return f"models:/{handle['model']}/{handle['version']}"


def _load_result(run_id: str, name: str) -> dict:
    import mlflow

    return mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation/{name}.json")


def _test_split(handle: Handle, settings: Settings):
    from maestro.pipeline import load_split

    return load_split(handle, "test")


def version_by_alias(settings: Settings, model: str, alias: str):
    """The model version holding `alias`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return tracking.client(settings).get_model_version_by_alias(model, alias)
    except MlflowException:
        return None


def champion_version(settings: Settings, model: str):
    """The version aliased champion, or None."""
    return version_by_alias(settings, model, CHAMPION)


def evaluate(handle: Handle, settings: Settings) -> Handle:
    """Metrics, champion comparison, slices and fairness on the test split."""
    import mlflow
    from maestro.evaluation import evaluate_challenger
    from maestro.modeling import scores

    spec = get_spec(handle["model"], settings)
    test = _test_split(handle, settings)
    X = test[spec.feature_names]
    model = mlflow.sklearn.load_model(_version_uri(handle))
    y_score = scores(model, spec, X)
    champion = champion_version(settings, spec.registered_name)
    champion_score = None
    if champion is not None and str(champion.version) != str(handle["version"]):
        champion_model = mlflow.sklearn.load_model(
            f"models:/{spec.registered_name}/{champion.version}"
        )
        champion_score = scores(champion_model, spec, X)
    result = evaluate_challenger(spec, test, y_score, champion_score)
    result["champion_version"] = str(champion.version) if champion_score is not None else None
    run_id = tracking.child_run(settings, handle["pipeline_run_id"], "evaluate", "evaluate")
    mlc = tracking.client(settings)
    mlc.log_dict(run_id, result, "evaluation/metrics.json")
    mlc.log_batch(run_id, metrics=_metric_entities(result["metrics"], "test_"))
    mlc.set_tag(run_id, "model_version", handle["version"])
    return {**handle, "evaluation_run_id": run_id}


def _metric_entities(values: dict[str, float], prefix: str) -> list:
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(f"{prefix}{k}", float(v), now, 0) for k, v in values.items()]


def validate_serving(handle: Handle, settings: Settings) -> Handle:
    """Load the version by its registry URI in a fresh process; compare scores, time rows."""
    import mlflow
    from maestro.modeling import scores
    from maestro.serving_check import check_in_fresh_process

    spec = get_spec(handle["model"], settings)
    rows = _test_split(handle, settings)[spec.feature_names].head(SAMPLE_ROWS)
    offline = scores(mlflow.sklearn.load_model(_version_uri(handle)), spec, rows)
    result = check_in_fresh_process(_version_uri(handle), rows, offline, settings.tracking_uri)
    result["latency_budget_ms"] = spec.governance.latency_budget_ms
    tracking.client(settings).log_dict(
        handle["evaluation_run_id"], result, "evaluation/serving.json"
    )
    return handle


def serving_checks(result: dict) -> list[dict]:
    from dataclasses import asdict

    from maestro.evaluation import Check

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


def explain(handle: Handle, settings: Settings) -> Handle:
    """Global SHAP importance: a table and a bar plot, as artifacts of the evaluation run."""
    import mlflow
    from maestro.explain import plot_importance, shap_importance

    spec = get_spec(handle["model"], settings)
    test = _test_split(handle, settings).head(EXPLAIN_ROWS)
    model = mlflow.sklearn.load_model(_version_uri(handle))
    family = (
        tracking.client(settings)
        .get_model_version(handle["model"], handle["version"])
        .tags["best_family"]
    )
    table = shap_importance(model, spec, family, test[spec.feature_names], test[spec.target.name])
    mlc = tracking.client(settings)
    with tempfile.TemporaryDirectory(prefix="maestro-shap-") as tmp:
        table.to_csv(Path(tmp) / "shap_importance.csv", index=False)
        plot_importance(
            table, Path(tmp) / "shap_importance.png", f"{spec.name} v{handle['version']}"
        )
        mlc.log_artifacts(handle["evaluation_run_id"], tmp, "explain")
    mlc.log_dict(
        handle["evaluation_run_id"],
        {"importance": table.to_dict(orient="records")},
        "evaluation/importance.json",
    )
    return handle


def verdict(handle: Handle, settings: Settings) -> Handle:
    """Every check's result as tags on the version, the model card, and the description."""
    from maestro.evaluation import failed_names

    run_id = handle["evaluation_run_id"]
    result = _load_result(run_id, "metrics")
    serving = _load_result(run_id, "serving")
    checks = result["checks"] + serving_checks(serving)
    failed = failed_names(checks)
    status = "passed" if not failed else "failed"
    mlc = tracking.client(settings)
    name, version = handle["model"], handle["version"]
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
    judged = {**handle, "validation_status": status, "failed_checks": failed}
    if status == "passed":
        judged["approval_request"] = approval_request(settings, judged)
    return judged


def card_facts(handle, settings, result, serving, checks, status, failed) -> dict:
    spec = get_spec(handle["model"], settings)
    version = tracking.client(settings).get_model_version(handle["model"], handle["version"])
    lineage_keys = (
        "data_version",
        "data_rows",
        "training_window_start",
        "training_window_end",
        "feature_service",
        "feature_views",
        "airflow_dag_id",
        "airflow_run_id",
        "code_version",
        "best_trial",
        "best_family",
        "pipeline_run_id",
    )
    return {
        "model": handle["model"],
        "version": handle["version"],
        "family": version.tags.get("best_family", ""),
        "intended_use": spec.governance.intended_use or spec.description,
        "primary_metric": spec.metric.name,
        "features": spec.feature_names,
        "metrics": result["metrics"],
        "champion_metrics": result["champion_metrics"],
        "champion_version": result["champion_version"],
        "slices": result["slices"],
        "checks": checks,
        "serving": serving,
        "importance": _load_result(handle["evaluation_run_id"], "importance")["importance"],
        "test_rows": result["rows"],
        "lineage": {k: version.tags[k] for k in lineage_keys if k in version.tags},
        "verdict": {"status": status, "failed": failed},
        "approval": None,
    }


def publish_card(settings: Settings, facts: dict, run_id: str) -> str:
    """Log the card (Markdown and HTML) and set its summary as the version's description."""
    from maestro.model_card import summary, to_html, to_markdown

    text = to_markdown(facts)
    mlc = tracking.client(settings)
    mlc.log_text(run_id, text, "model_card/model_card.md")
    mlc.log_text(
        run_id, to_html(text, f"{facts['model']} v{facts['version']}"), "model_card/model_card.html"
    )
    mlc.update_model_version(facts["model"], facts["version"], description=summary(facts))
    uri = f"{mlc.get_run(run_id).info.artifact_uri}/model_card/model_card.html"
    mlc.set_model_version_tag(facts["model"], facts["version"], "model_card", uri)
    return uri


# ---- decisions ---------------------------------------------------------------------------


def decision_of(settings: Settings, model: str, version: str) -> dict | None:
    """The recorded decision on a version (from any channel), or None while undecided."""
    tags = tracking.client(settings).get_model_version(model, version).tags
    value = tags.get("approval", "").strip().lower()
    if value not in (APPROVED, REJECTED):
        return None
    return {
        "decision": value,
        "by": tags.get("approval_by", ""),
        "at": tags.get("approval_at", ""),
        "comment": tags.get("approval_comment", ""),
        "via": tags.get("approval_via", "mlflow-tag"),
    }


def record_decision(
    settings: Settings, model: str, version: str, decision: str, by: str, comment: str, via: str
) -> dict:
    """Write a decision's audit tags; the first decision stands, a different later one is refused."""
    if decision not in (APPROVED, REJECTED):
        raise GovernanceError(f"decision must be {APPROVED!r} or {REJECTED!r}, got {decision!r}")
    mlc = tracking.client(settings)
    tags = mlc.get_model_version(model, version).tags
    if tags.get("validation_status") != "passed":
        raise GovernanceError(
            f"{model} version {version}: validation_status is "
            f"{tags.get('validation_status', 'missing')!r}; only a version that passed every gate "
            "can be decided on"
        )
    earlier = decision_of(settings, model, version)
    if earlier and earlier["at"]:  # already recorded in full: the first decision stands
        if earlier["decision"] != decision:
            raise GovernanceError(
                f"{model} version {version} was already {earlier['decision']} by "
                f"{earlier['by']} at {earlier['at']}"
            )
        return earlier
    record = {"decision": decision, "by": by, "at": _now(), "comment": comment, "via": via}
    for key, value in (
        ("approval", decision),
        ("approval_by", by),
        ("approval_at", record["at"]),
        ("approval_comment", comment),
        ("approval_via", via),
    ):
        mlc.set_model_version_tag(model, version, key, value)
    _add_decision_to_card(settings, model, version, record)
    return record


def _add_decision_to_card(settings: Settings, model: str, version: str, record: dict) -> None:
    tags = tracking.client(settings).get_model_version(model, version).tags
    run_id = tags.get("evaluation_run_id")
    if not run_id:
        return
    facts = _load_result(run_id, "card_facts")
    facts["approval"] = record
    publish_card(settings, facts, run_id)


def check_approver(allowed: list[str], by: str, model: str) -> None:
    if allowed and by not in allowed:
        raise GovernanceError(f"{by!r} may not decide on {model}: approvers are {allowed}")


# ---- promotion ---------------------------------------------------------------------------


def promote(settings: Settings, model: str, version: str, by: str, comment: str = "") -> dict:
    """Move `champion` to `version` (the former champion becomes `previous`); archive the
    versions beyond the spec's `keep_versions`. Refused unless validated and approved."""
    spec = get_spec(model, settings)
    mlc = tracking.client(settings)
    tags = mlc.get_model_version(model, version).tags
    if tags.get("validation_status") != "passed":
        raise GovernanceError(
            f"{model} version {version} has not passed validation "
            f"(validation_status={tags.get('validation_status', 'missing')!r})"
        )
    if tags.get("approval") != APPROVED:
        raise GovernanceError(
            f"{model} version {version} is not approved "
            f"(approval={tags.get('approval', 'missing')!r})"
        )
    old = champion_version(settings, model)
    if old is not None and str(old.version) == str(version):
        return {
            "action": "promote",
            "model": model,
            "champion": str(version),
            "previous": _alias(settings, model, PREVIOUS),
        }
    if old is not None:
        mlc.set_registered_model_alias(model, PREVIOUS, str(old.version))
    mlc.set_registered_model_alias(model, CHAMPION, str(version))
    for key, value in (
        ("promoted_at", _now()),
        ("promoted_by", by),
        ("promotion_comment", comment),
    ):
        mlc.set_model_version_tag(model, version, key, value)
    archive_old_versions(settings, model, spec.governance.keep_versions)
    previous = str(old.version) if old else None
    return {"action": "promote", "model": model, "champion": str(version), "previous": previous}


def rollback(settings: Settings, model: str, by: str, comment: str = "") -> dict:
    """Swap `champion` and `previous`: the version that served before serves again."""
    mlc = tracking.client(settings)
    target = _alias(settings, model, PREVIOUS)
    current = _alias(settings, model, CHAMPION)
    if target is None or current is None:
        raise GovernanceError(f"{model}: rollback needs both a champion and a previous version")
    mlc.set_registered_model_alias(model, CHAMPION, target)
    mlc.set_registered_model_alias(model, PREVIOUS, current)
    for key, value in (
        ("rolled_back_at", _now()),
        ("rolled_back_by", by),
        ("rollback_comment", comment),
    ):
        mlc.set_model_version_tag(model, current, key, value)
    return {"action": "rollback", "model": model, "champion": target, "previous": current}


def _alias(settings: Settings, model: str, alias: str) -> str | None:
    found = version_by_alias(settings, model, alias)
    return str(found.version) if found else None


def archive_old_versions(settings: Settings, model: str, keep: int) -> list[str]:
    """Tag `archived` every version older than the newest `keep` that holds no alias."""
    mlc = tracking.client(settings)
    versions = sorted(mlc.search_model_versions(f"name = '{model}'"), key=lambda v: int(v.version))
    kept = {str(v.version) for v in versions[-keep:]}
    # the registered model's alias map: version search results do not carry aliases
    held = {str(v) for v in mlc.get_registered_model(model).aliases.values()}
    archived = []
    for v in versions:
        if str(v.version) not in kept | held and v.tags.get("archived") != "true":
            mlc.set_model_version_tag(model, v.version, "archived", "true")
            archived.append(str(v.version))
    return archived


def card_link(settings: Settings, model: str, version: str) -> str:
    """The model card in the MLflow UI when its address is known, else its artifact URI."""
    mlc = tracking.client(settings)
    tags = mlc.get_model_version(model, version).tags
    card = tags.get("model_card", "")
    if not settings.mlflow_ui_url or "/artifacts/" not in card:
        return card
    run = mlc.get_run(tags["evaluation_run_id"])
    return (
        f"{settings.mlflow_ui_url.rstrip('/')}/#/experiments/{run.info.experiment_id}"
        f"/runs/{run.info.run_id}/artifacts/{card.split('/artifacts/', 1)[1]}"
    )


def approval_request(settings: Settings, handle: Handle) -> str:
    """The body of the approval request: key metrics, fairness results, link to the card."""
    facts = _load_result(handle["evaluation_run_id"], "card_facts")
    lines = [f"**{facts['model']} version {facts['version']}** passed every gate.", ""]
    lines += [f"- {k}: {v:.4f}" for k, v in facts["metrics"].items()]
    lines += [""] + [
        f"- {c['name']}: {c['value']:.4f} (limit {c['limit']})"
        for c in facts["checks"]
        if c["name"].startswith("fairness:") and c["value"] is not None
    ]
    lines += [
        "",
        f"Model card: {card_link(settings, facts['model'], facts['version'])}",
        "",
        f"Or decide outside Airflow: `maestro approve {facts['model']} {facts['version']}`.",
    ]
    return "\n".join(lines)

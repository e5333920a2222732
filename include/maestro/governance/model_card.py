"""Model cards: what a version is for, how it was made and judged, and who decided on it.

The card is rendered from one JSON-able dict (`card_facts`) as Markdown and as standalone
HTML; its first paragraph (`summary`) becomes the model version's description.
"""

from __future__ import annotations

import math
from typing import Any

from maestro import tracking
from maestro.config import Settings
from maestro.handles import CandidateVersion
from maestro.spec import get_spec

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "color:#222}table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;"
    "padding:.25rem .5rem;text-align:left}th{background:#f3f3f3}code{background:#f3f3f3}"
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _table(rows: list[dict], columns: list[str] | None = None) -> list[str]:
    if not rows:
        return ["(none)", ""]
    columns = columns or list(rows[0])
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return [*lines, ""]


def summary(facts: dict) -> str:
    verdict = facts["verdict"]
    failed = ", ".join(verdict["failed"]) or "none"
    metric = facts["primary_metric"]
    value = facts["metrics"][metric]
    line = (
        f"{facts['model']} version {facts['version']} ({facts['family']}): test {metric} "
        f"{value:.4f}; validation {verdict['status']} (failed checks: {failed})."
    )
    if facts.get("approval"):
        a = facts["approval"]
        line += f" Approval: {a['decision']} by {a['by']} at {a['at']}."
    return line


def to_markdown(facts: dict) -> str:
    lines = [f"# Model card: {facts['model']} version {facts['version']}", "", summary(facts), ""]
    lines += ["## Intended use", "", facts["intended_use"] or "(not stated in the spec)", ""]
    lines += ["## Data", ""]
    lines += _table(
        [
            {"what": "data version", "value": facts["lineage"].get("data_version", "")},
            {"what": "rows", "value": facts["lineage"].get("data_rows", "")},
            {
                "what": "training window",
                "value": f"{facts['lineage'].get('training_window_start', '')} to {facts['lineage'].get('training_window_end', '')}",
            },
            {"what": "test rows", "value": facts["test_rows"]},
        ]
    )
    lines += ["## Features", "", ", ".join(f"`{f}`" for f in facts["features"]), ""]
    lines += ["## Metrics (test split)", ""]
    champion = facts.get("champion_metrics") or {}
    lines += _table(
        [
            {"metric": k, "this version": v, "champion": champion.get(k, "")}
            for k, v in facts["metrics"].items()
        ]
    )
    if facts.get("champion_version"):
        lines += [
            f"Champion compared: version {facts['champion_version']}, on the same test rows.",
            "",
        ]
    else:
        lines += ["No champion yet: judged on value thresholds alone.", ""]
    lines += ["## Metrics per slice", ""]
    for name, rows in facts["slices"].items():
        lines += [f"### {name}", ""] + _table(rows)
    lines += ["## Fairness", ""]
    fairness_checks = [c for c in facts["checks"] if c["name"].startswith("fairness:")]
    lines += _table(
        [
            {
                "check": c["name"],
                "value": c["value"],
                "limit": c["limit"],
                "result": "pass" if c["passed"] else "FAIL",
                "note": c["detail"],
            }
            for c in fairness_checks
        ]
    )
    lines += ["## Serving check", ""]
    serving = facts.get("serving") or {}
    lines += (
        _table([{k: v for k, v in serving.items() if k != "error"}])
        if serving.get("loaded")
        else [f"Not loadable: {serving.get('error', 'not run')}", ""]
    )
    lines += ["## Global feature importance", ""]
    lines += _table(facts["importance"][:15])
    lines += ["## Verdict", "", f"**{facts['verdict']['status']}**", ""]
    lines += _table(
        [
            {
                "check": c["name"],
                "value": c["value"],
                "limit": c["limit"],
                "result": "pass" if c["passed"] else "FAIL",
            }
            for c in facts["checks"]
        ]
    )
    lines += ["## Lineage", ""]
    lines += _table([{"tag": k, "value": v} for k, v in sorted(facts["lineage"].items())])
    lines += ["## Approval", ""]
    if facts.get("approval"):
        a = facts["approval"]
        lines += _table(
            [
                {
                    "decision": a["decision"],
                    "by": a["by"],
                    "at": a["at"],
                    "via": a.get("via", ""),
                    "comment": a.get("comment", ""),
                }
            ]
        )
    else:
        lines += [
            "Not decided yet."
            if facts["verdict"]["status"] == "passed"
            else "Not requested: the version failed validation.",
            "",
        ]
    return "\n".join(lines)


def to_html(markdown_text: str, title: str) -> str:
    import mistune

    body = mistune.create_markdown(plugins=["table"])(markdown_text)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


# ---- publishing ------------------------------------------------------------------------


def card_facts(
    handle: CandidateVersion, settings: Settings, result, serving, checks, status, failed
) -> dict:
    spec = get_spec(handle.model, settings)
    version = tracking.client(settings).get_model_version(handle.model, handle.version)
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
        "model": handle.model,
        "version": handle.version,
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
        "importance": load_result(handle.evaluation_run_id, "importance")["importance"],
        "test_rows": result["rows"],
        "lineage": {k: version.tags[k] for k in lineage_keys if k in version.tags},
        "verdict": {"status": status, "failed": failed},
        "approval": None,
    }


def publish_card(settings: Settings, facts: dict, run_id: str) -> str:
    """Log the card (Markdown and HTML) and set its summary as the version's description."""
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


def approval_request(settings: Settings, handle: CandidateVersion) -> str:
    """The body of the approval request: key metrics, fairness results, link to the card."""
    facts = load_result(handle.evaluation_run_id, "card_facts")
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


def load_result(run_id: str, name: str) -> dict:
    """One of the evaluation run's JSON results (`metrics`, `serving`, `card_facts`, ...)."""
    import mlflow

    return mlflow.artifacts.load_dict(f"runs:/{run_id}/evaluation/{name}.json")

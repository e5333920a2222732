"""Model cards: what a version is for, how it was made and judged, and who decided on it.

The card is rendered from one JSON-able dict (`card_facts`) as Markdown and as standalone
HTML; its first paragraph (`summary`) becomes the model version's description.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Any

from maestro import tracking
from maestro.config import Settings
from maestro.handles import CandidateVersion
from maestro.spec import get_spec
from maestro.vocabulary import LINEAGE_TAGS

STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "color:#222}table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;"
    "padding:.25rem .5rem;text-align:left}th{background:#f3f3f3}code{background:#f3f3f3}"
)


def cell(value: Any) -> str:
    """A Markdown table cell: numbers to 4 significant digits, and nothing that would end the
    cell or the row (`|`, line breaks)."""
    if isinstance(value, float):
        text = "n/a" if math.isnan(value) else f"{value:.4g}"
    else:
        text = str(value)
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


@lru_cache(maxsize=1)
def _template() -> Any:
    import jinja2

    # B701: Markdown: `cell` escapes, mistune renders
    env = jinja2.Environment(  # nosec B701
        loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
        autoescape=False,  # Markdown; cells are escaped by `cell`, the HTML by mistune
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["cell"] = cell
    env.filters["code"] = lambda name: f"`{name}`"
    return env.get_template("model_card.md.j2")


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
    """The card as Markdown (the HTML version is rendered from it)."""
    champion = facts.get("champion_metrics") or {}
    approval = facts.get("approval") or {}
    serving = facts.get("serving") or {}
    return (
        _template()
        .render(
            **{**facts, "serving": serving},
            summary=summary(facts),
            metric_rows=[
                {"metric": k, "this version": v, "champion": champion.get(k, "")}
                for k, v in facts["metrics"].items()
            ],
            fairness_rows=[
                {**_check_row(c), "note": c["detail"]}
                for c in facts["checks"]
                if c["name"].startswith("fairness:")
            ],
            serving_row={k: v for k, v in serving.items() if k != "error"},
            check_rows=[_check_row(c) for c in facts["checks"]],
            class_rows=class_rows(facts),
            lineage_rows=[{"tag": k, "value": v} for k, v in sorted(facts["lineage"].items())],
            approval_row={
                key: approval.get(key, "") for key in ("decision", "by", "at", "via", "comment")
            },
        )
        .rstrip("\n")
    )


def class_rows(facts: dict) -> list[dict]:
    """Multiclass: each class's test recall (undefined when the test split has none of it)
    and the features that matter most for it (mean |SHAP| of its probability)."""
    importance = facts.get("importance") or []
    rows = []
    for label in facts.get("classes") or []:
        recall = facts.get("per_class_recall", {}).get(label)
        column = f"class {label}"
        ranked = sorted(
            (r for r in importance if r.get(column) is not None), key=lambda r: -r[column]
        )
        rows.append(
            {
                "class": label,
                "test recall": "undefined (no test rows)" if recall is None else recall,
                "top features": ", ".join(r["feature"] for r in ranked[:3]) or "(not computed)",
            }
        )
    return rows


def _check_row(check: dict) -> dict:
    result = "pass" if check["passed"] else "FAIL"
    return {
        "check": check["name"],
        "value": check["value"],
        "limit": check["limit"],
        "result": result,
    }


def to_html(markdown_text: str, title: str) -> str:
    import mistune

    body = mistune.create_markdown(plugins=["table"])(markdown_text)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


# ---- publishing ------------------------------------------------------------------------


def card_facts(
    handle: CandidateVersion,
    settings: Settings,
    result: Any,
    serving: Any,
    checks: Any,
    status: Any,
    failed: Any,
) -> dict:
    spec = get_spec(handle.model, settings)
    version = tracking.client(settings).get_model_version(handle.model, handle.version)
    return {
        "model": handle.model,
        "version": handle.version,
        "family": version.tags.get("best_family", ""),
        "trainer": trainer.function
        if (trainer := spec.trainers.get(version.tags.get("best_family", "")))
        else None,
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
        "classes": spec.classes,
        "per_class_recall": result.get("per_class_recall", {}),
        "test_rows": result["rows"],
        "slice_rows": result["slice_rows"],
        "lineage": {k: version.tags[k] for k in LINEAGE_TAGS if k in version.tags},
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

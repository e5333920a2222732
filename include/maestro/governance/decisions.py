"""Human decisions on a validated model version, whatever channel they come by (Airflow's
Required Actions, `maestro approve|reject`, the MLflow UI or REST API): audit tags on the
version, added to its model card. The first decision stands."""

from __future__ import annotations

from maestro import tracking
from maestro.config import Settings
from maestro.governance.model_card import load_result, publish_card
from maestro.registry import GovernanceError, now, promote, require_validated
from maestro.vocabulary import APPROVAL_TAGS, APPROVED, REJECTED


def decision_of(settings: Settings, model: str, version: str) -> dict | None:
    """The recorded decision on a version (from any channel), or None while undecided."""
    tags = tracking.client(settings).get_model_version(model, version).tags
    decision = {field: tags.get(key, "") for field, key in APPROVAL_TAGS.items()}
    decision["decision"] = decision["decision"].strip().lower()
    if decision["decision"] not in (APPROVED, REJECTED):
        return None
    decision["via"] = decision["via"] or "mlflow-tag"  # a tag set by hand says nothing more
    return decision


def record_decision(
    settings: Settings, model: str, version: str, decision: str, by: str, comment: str, via: str
) -> dict:
    """Write a decision's audit tags; the first decision stands, a different later one is refused."""
    if decision not in (APPROVED, REJECTED):
        raise GovernanceError(f"decision must be {APPROVED!r} or {REJECTED!r}, got {decision!r}")
    mlc = tracking.client(settings)
    require_validated(mlc.get_model_version(model, version).tags, model, version)
    earlier = decision_of(settings, model, version)
    if earlier and earlier["at"]:  # already recorded in full: the first decision stands
        if earlier["decision"] != decision:
            raise GovernanceError(
                f"{model} version {version} was already {earlier['decision']} by "
                f"{earlier['by']} at {earlier['at']}"
            )
        return earlier
    record = {"decision": decision, "by": by, "at": now(), "comment": comment, "via": via}
    for field, key in APPROVAL_TAGS.items():
        mlc.set_model_version_tag(model, version, key, record[field])
    _add_decision_to_card(settings, model, version, record)
    return record


def _add_decision_to_card(settings: Settings, model: str, version: str, record: dict) -> None:
    tags = tracking.client(settings).get_model_version(model, version).tags
    run_id = tags.get("evaluation_run_id")
    if not run_id:
        return
    facts = load_result(run_id, "card_facts")
    facts["approval"] = record
    publish_card(settings, facts, run_id)


def authorised_decision(
    settings: Settings, model: str, version: str, approvers: list[str]
) -> dict | None:
    """The recorded decision on a version, or None while undecided. A decision by someone who
    is not one of `approvers` raises GovernanceError, as `maestro approve` does: the approval
    trigger logs it and keeps waiting for an approver."""
    decision = decision_of(settings, model, version)
    if decision is not None:
        check_approver(approvers, decision["by"], model)
    return decision


def check_approver(allowed: list[str], by: str, model: str) -> None:
    """Refuse a decision by anyone but the model's approvers (anyone, when none are named)."""
    if allowed and by not in allowed:
        raise GovernanceError(f"{by!r} may not decide on {model}: approvers are {allowed}")


def promote_approved(settings: Settings, model: str, version: str) -> dict:
    """Promote a version as its recorded decision says (the training DAG's `promote` task);
    the promotion names who approved it."""
    decision = decision_of(settings, model, version)
    if decision is None or decision["decision"] != APPROVED:
        raise GovernanceError(f"{model} version {version} has no approval to promote on")
    return promote(settings, model, version, decision["by"], decision["comment"])

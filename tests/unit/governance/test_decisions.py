"""Decisions on a validated version, on a real MLflow registry (SQLite): one rule for who may
decide, whatever the channel (`maestro approve`, a tag the approval trigger reads)."""

from __future__ import annotations

import pytest

from maestro import tracking
from maestro.governance import decisions
from maestro.registry import GovernanceError
from maestro.vocabulary import APPROVED, REJECTED


@pytest.fixture
def versions(settings, demo_versions):
    """Version 1 passed its gates; version 2 failed them."""
    demo_versions(settings, 1, validation_status="passed")
    demo_versions(settings, 1, validation_status="failed")
    return settings


def tag(settings, version: str, **tags: str) -> None:
    for key, value in tags.items():
        tracking.client(settings).set_model_version_tag("demo", version, key, value)


def test_undecided_is_none_and_an_approvers_tag_is_the_decision(versions):
    assert decisions.authorised_decision(versions, "demo", "1", ["admin"]) is None
    tag(versions, "1", approval="Approved ", approval_by="admin", approval_via="mlflow-ui")
    decision = decisions.authorised_decision(versions, "demo", "1", ["admin"])
    assert decision["decision"] == APPROVED and decision["by"] == "admin"
    assert decision["via"] == "mlflow-ui"


def test_a_tag_by_someone_else_is_refused_like_the_cli_refuses_them(versions):
    tag(versions, "1", approval="approved", approval_by="mallory")
    with pytest.raises(GovernanceError) as from_tag:
        decisions.authorised_decision(versions, "demo", "1", ["admin"])
    with pytest.raises(GovernanceError) as from_cli:
        decisions.check_approver(["admin"], "mallory", "demo")
    assert str(from_tag.value) == str(from_cli.value)
    assert decisions.authorised_decision(versions, "demo", "1", [])["by"] == "mallory"


def test_the_first_decision_stands_and_only_a_validated_version_is_decided(versions):
    first = decisions.record_decision(versions, "demo", "1", APPROVED, "admin", "ok", "cli")
    again = decisions.record_decision(versions, "demo", "1", APPROVED, "admin", "", "cli")
    assert again == first
    with pytest.raises(GovernanceError, match="already approved by admin"):
        decisions.record_decision(versions, "demo", "1", REJECTED, "admin", "", "cli")
    with pytest.raises(GovernanceError, match="validation_status is 'failed'"):
        decisions.record_decision(versions, "demo", "2", APPROVED, "admin", "", "cli")


def test_promote_approved_needs_an_approval(versions):
    with pytest.raises(GovernanceError, match="no approval to promote on"):
        decisions.promote_approved(versions, "demo", "1")
    decisions.record_decision(versions, "demo", "1", REJECTED, "admin", "no", "cli")
    with pytest.raises(GovernanceError, match="no approval to promote on"):
        decisions.promote_approved(versions, "demo", "1")

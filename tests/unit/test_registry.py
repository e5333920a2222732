"""Promotion bookkeeping on a real MLflow registry (SQLite): aliases, archiving, rollback."""

from __future__ import annotations

import pytest

from maestro import registry as aliases
from maestro import tracking, vocabulary
from maestro.registry import GovernanceError


@pytest.fixture
def registry(use_specs, demo_versions):
    """Five versions of `demo`, each validated and approved; the spec keeps two."""
    settings = use_specs({"demo": {"governance": {"keep_versions": 2}}})
    demo_versions(settings, 5, validation_status="passed", approval=vocabulary.APPROVED)
    return settings


def archived(settings) -> set[str]:
    versions = tracking.client(settings).search_model_versions("name = 'demo'")
    return {str(v.version) for v in versions if v.tags.get("archived") == "true"}


def test_promotions_keep_champion_and_previous_and_archive_the_rest(registry):
    for version in "12345":
        done = aliases.promote(registry, "demo", version, by="admin")
    assert done == {"action": "promote", "model": "demo", "champion": "5", "previous": "4"}
    assert str(aliases.version_by_alias(registry, "demo", "champion").version) == "5"
    assert str(aliases.version_by_alias(registry, "demo", "previous").version) == "4"
    assert archived(registry) == {"1", "2", "3"}
    tags = tracking.client(registry).get_model_version("demo", "5").tags
    assert tags["promoted_by"] == "admin" and tags["promoted_at"]


def test_a_version_holding_an_alias_is_never_archived(registry):
    tracking.client(registry).set_registered_model_alias("demo", "pinned", "1")
    for version in "2345":
        aliases.promote(registry, "demo", version, by="admin")
    assert archived(registry) == {"2", "3"}


def test_rollback_swaps_champion_and_previous_and_needs_both(registry):
    with pytest.raises(GovernanceError, match="needs both a champion and a previous"):
        aliases.rollback(registry, "demo", by="admin")
    aliases.promote(registry, "demo", "1", by="admin")
    aliases.promote(registry, "demo", "2", by="admin")
    done = aliases.rollback(registry, "demo", by="oncall", comment="latency regression")
    assert done == {"action": "rollback", "model": "demo", "champion": "1", "previous": "2"}
    tags = tracking.client(registry).get_model_version("demo", "2").tags
    assert tags["rolled_back_by"] == "oncall"
    assert tags["rollback_comment"] == "latency regression"


def test_promoting_the_champion_again_changes_nothing(registry):
    aliases.promote(registry, "demo", "1", by="admin")
    aliases.promote(registry, "demo", "2", by="admin")
    done = aliases.promote(registry, "demo", "2", by="someone-else")
    assert done["champion"] == "2" and done["previous"] == "1"
    assert tracking.client(registry).get_model_version("demo", "2").tags["promoted_by"] == "admin"


def test_an_unapproved_version_is_refused_and_no_alias_moves(registry):
    aliases.promote(registry, "demo", "1", by="admin")
    tracking.client(registry).set_model_version_tag("demo", "3", "approval", "rejected")
    with pytest.raises(GovernanceError, match="version 3 is not approved"):
        aliases.promote(registry, "demo", "3", by="admin")
    assert str(aliases.version_by_alias(registry, "demo", "champion").version) == "1"
    assert aliases.version_by_alias(registry, "demo", "previous") is None

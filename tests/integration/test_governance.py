"""Governance, run for real with `dag.test()`: evaluation gates, the model card, a human's
decision by tag, and promotion. Nothing reaches `champion` without passing every gate and an
explicit, recorded approval."""

from __future__ import annotations

import shutil
from pathlib import Path

import mlflow
import pytest

from maestro import registry, tracking
from maestro.platform.airflow_env import load_dag
from tests.support import deciding, write_specs

pytestmark = pytest.mark.slow


def demo_overrides(demo: dict) -> dict:
    source = {"rows": 8000, **demo.pop("source", {})}  # enough test rows to judge fairness
    # a latency budget that a loaded, shared test machine still meets (the gate stays on)
    governance = {"latency_budget_ms": 500, **demo.pop("governance", {})}
    return {"demo": {"source": source, "governance": governance, **demo}}


def demo_specs(use_specs, name: str, demo: dict):
    return use_specs(demo_overrides(demo), name)


@pytest.fixture(scope="module")
def champion_state(tmp_path_factory) -> Path:
    """A state folder in which `demo` has a champion, trained and approved once for the
    module's tests that start from one; each takes a copy (`with_champion`)."""
    from maestro.config import get_settings
    from tests.conftest import fresh_state

    folder = tmp_path_factory.mktemp("champion")
    with pytest.MonkeyPatch.context() as monkeypatch:
        fresh_state(folder, monkeypatch)
        specs = write_specs(folder / "specs", demo_overrides({}))
        monkeypatch.setenv("MAESTRO_SPECS_DIR", str(specs))
        get_settings.cache_clear()
        run = train(get_settings(), "approved")
        assert states(run)["promote"] == "success", states(run)
    get_settings.cache_clear()
    return folder / "home"


def with_champion(champion_state: Path, settings, use_specs, name: str, demo: dict):
    """The test's state folder, a copy of `champion_state`; its champion's version."""
    shutil.copytree(champion_state, settings.home, dirs_exist_ok=True)
    settings = demo_specs(use_specs, name, demo)
    return settings, champion_of(settings)


def train(settings, decision: str | None = None, trials: int = 4):
    """One run of train_demo; `decision` is given by tag to a version that passed its gates."""
    dag = load_dag("train_demo", settings)  # before the approver's thread starts importing
    if decision is None:
        return dag.test(run_conf={"trials": trials, "workers": 1})
    with deciding(settings, "demo", decision):
        return dag.test(run_conf={"trials": trials, "workers": 1})


def states(dag_run) -> dict[str, str]:
    return {ti.task_id: ti.state for ti in dag_run.get_task_instances()}


def test_a_good_model_is_approved_by_tag_and_becomes_champion(champion_state, settings, use_specs):
    settings, _ = with_champion(champion_state, settings, use_specs, "specs", {})
    mlc = tracking.client(settings)
    v1 = mlc.get_model_version_by_alias("demo", "champion")
    assert v1.tags["validation_status"] == "passed"
    assert v1.tags["approval"] == "approved" and v1.tags["approval_by"] == "admin"
    assert v1.tags["approval_at"] and v1.tags["approval_via"] == "cli"
    card = mlflow.artifacts.load_text(
        v1.tags["model_card"].replace("model_card.html", "model_card.md")
    )
    assert "approved" in card and "## Fairness" in card and "group" in card
    assert "validation passed" in v1.description
    second = train(settings, "approved")
    assert second.state == "success", states(second)
    v2 = mlc.get_model_version_by_alias("demo", "champion")
    assert v2.version != v1.version
    assert mlc.get_model_version_by_alias("demo", "previous").version == v1.version


def champion_of(settings) -> str | None:
    champion = registry.champion_version(settings, "demo")
    return str(champion.version) if champion else None


def test_a_biased_model_fails_fairness_and_asks_nobody(champion_state, settings, use_specs):
    settings, champion = with_champion(
        champion_state, settings, use_specs, "biased", {"source": {"bias": 0.6}}
    )
    run = train(settings)  # nobody answers: a request would wait, and the test would time out
    assert run.state == "success"
    assert states(run)["not_promoted"] == "success"
    assert states(run)["request_approval"] == "skipped" and states(run)["promote"] == "skipped"
    version = tracking.client(settings).get_model_version_by_alias("demo", "challenger")
    assert version.tags["validation_status"] == "failed"
    assert "fairness:group:demographic_parity_difference" in version.tags["validation_failed"]
    assert "approval" not in version.tags
    assert champion_of(settings) == champion


def test_a_worse_model_fails_the_champion_comparison(champion_state, settings, use_specs):
    settings, champion = with_champion(
        champion_state, settings, use_specs, "noisy", {"source": {"noise": 0.9}}
    )
    run = train(settings)
    assert states(run)["not_promoted"] == "success", states(run)
    version = tracking.client(settings).get_model_version_by_alias("demo", "challenger")
    assert "champion:roc_auc" in version.tags["validation_failed"]
    assert champion_of(settings) == champion


def test_rejection_and_timeout_are_recorded_and_promote_nothing(use_specs):
    settings = demo_specs(use_specs, "reject", {})
    rejected = train(settings, "rejected")
    assert rejected.state == "success" and states(rejected)["promote"] == "skipped"
    mlc = tracking.client(settings)
    v1 = mlc.get_model_version_by_alias("demo", "challenger")
    assert v1.tags["approval"] == "rejected" and v1.tags["approval_by"] == "admin"
    assert champion_of(settings) is None

    settings = demo_specs(use_specs, "timeout", {"governance": {"approval_timeout_hours": 0.002}})
    timed_out = train(settings)  # nobody answers within 7 seconds
    assert timed_out.state == "success" and states(timed_out)["promote"] == "skipped"
    v2 = mlc.get_model_version_by_alias("demo", "challenger")
    assert v2.version != v1.version
    assert v2.tags["approval"] == "rejected" and v2.tags["approval_via"] == "timeout"
    assert champion_of(settings) is None
    card = mlflow.artifacts.load_text(v2.tags["model_card"].replace(".html", ".md"))
    assert "timeout" in card


def test_promote_refuses_unapproved_and_rollback_restores_previous(
    champion_state, settings, use_specs
):
    settings, v1 = with_champion(champion_state, settings, use_specs, "manual", {})
    run = train(settings, "rejected")
    v2 = str(tracking.client(settings).get_model_version_by_alias("demo", "challenger").version)
    assert states(run)["promote"] == "skipped"
    with pytest.raises(registry.GovernanceError, match="not approved"):
        registry.promote(settings, "demo", v2, "admin")
    train(settings, "approved")
    v3 = champion_of(settings)
    assert v3 not in (v1, v2)
    registry.rollback(settings, "demo", "admin", "bad canary")
    assert champion_of(settings) == v1
    mlc = tracking.client(settings)
    assert str(mlc.get_model_version_by_alias("demo", "previous").version) == v3
    assert mlc.get_model_version("demo", v3).tags["rolled_back_by"] == "admin"

"""The model registry's aliases, the platform's record of what serves: registering a
training run's version (`challenger`), promotion to `champion` (the former one becomes
`previous`), rollback, and archiving. Nothing reaches `champion` without
`validation_status=passed` and `approval=approved`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from maestro import tracking
from maestro.config import Settings
from maestro.errors import BadInput
from maestro.spec import get_spec
from maestro.vocabulary import APPROVED, CHAMPION, PASSED, PREVIOUS, VALIDATION_STATUS_TAG

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion


class GovernanceError(BadInput):
    """A promotion, rollback or decision that the rules forbid; the message says which rule."""


def now() -> str:
    """The time stamp of audit tags (UTC, seconds)."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def version_of_run(settings: Settings, model: str, dag_id: str, run_id: str) -> ModelVersion | None:
    """The model version an Airflow run already registered, if any."""
    mlc = tracking.client(settings)
    found = mlc.search_model_versions(
        f"name = '{model}' and tags.airflow_run_id = '{run_id}' and tags.airflow_dag_id = '{dag_id}'"
    )
    return found[0] if found else None


def register(settings: Settings, model: str, model_uri: str, tags: dict[str, str]) -> str:
    """Register `model_uri` as a new version of `model` (once per Airflow run), with tags.

    Tags go on before any alias moves, so a version without lineage never serves.
    """
    import mlflow

    existing = version_of_run(settings, model, tags["airflow_dag_id"], tags["airflow_run_id"])
    if existing is not None:
        return existing.version
    return mlflow.register_model(model_uri, model, tags=tags).version


def set_alias(settings: Settings, model: str, alias: str, version: str) -> None:
    tracking.client(settings).set_registered_model_alias(model, alias, version)


def version_by_alias(settings: Settings, model: str, alias: str) -> ModelVersion | None:
    """The model version holding `alias`, or None."""
    from mlflow.exceptions import MlflowException

    try:
        return tracking.client(settings).get_model_version_by_alias(model, alias)
    except MlflowException:
        return None


def champion_version(settings: Settings, model: str) -> ModelVersion | None:
    """The version aliased champion, or None."""
    return version_by_alias(settings, model, CHAMPION)


def require_validated(tags: dict[str, str], model: str, version: str) -> None:
    """Refuse a version that did not pass every evaluation gate (decisions and promotion)."""
    status = tags.get(VALIDATION_STATUS_TAG, "missing")
    if status != PASSED:
        raise GovernanceError(
            f"{model} version {version}: validation_status is {status!r}; only a version that "
            "passed every gate can be decided on or promoted"
        )


def promote(settings: Settings, model: str, version: str, by: str, comment: str = "") -> dict:
    """Move `champion` to `version` (the former champion becomes `previous`); archive the
    versions beyond the spec's `keep_versions`. Refused unless validated and approved."""
    spec = get_spec(model, settings)
    mlc = tracking.client(settings)
    tags = mlc.get_model_version(model, version).tags
    require_validated(tags, model, version)
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
        ("promoted_at", now()),
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
        ("rolled_back_at", now()),
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

"""What waits on people: versions that passed every gate and wait for a decision (reminded
once past the spec's limit), and the champion's age, for Prometheus."""

from __future__ import annotations

import datetime as dt

from maestro import registry, tracking
from maestro.config import Settings
from maestro.monitoring import metrics
from maestro.spec import get_spec
from maestro.vocabulary import APPROVAL_TAGS, PASSED, VALIDATION_STATUS_TAG


def pending_approvals(settings: Settings, model: str) -> list:
    """Versions that passed every gate and still wait for a decision."""
    mlc = tracking.client(settings)
    versions = mlc.search_model_versions(f"name = '{model}'")
    return [
        v
        for v in versions
        if v.tags.get(VALIDATION_STATUS_TAG) == PASSED
        and APPROVAL_TAGS["decision"] not in v.tags
        and v.tags.get("archived") != "true"
    ]


def watch_pipeline(model: str, settings: Settings) -> dict:
    """Pending approvals and the champion's age, for Prometheus and the spec's recipients: a
    version waiting longer than `notify.approval_wait_hours` is reported once."""
    from maestro.monitoring import alerts

    spec = get_spec(model, settings)
    now = dt.datetime.now(dt.UTC).timestamp()
    waiting = pending_approvals(settings, model)
    ages = {str(v.version): now - v.creation_timestamp / 1000 for v in waiting}
    limit = spec.monitoring.notify.approval_wait_hours * 3600
    mlc = tracking.client(settings)
    reminded = []
    for v in waiting:
        if ages[str(v.version)] > limit and "approval_reminded_at" not in v.tags:
            alerts.send(
                spec.monitoring.notify,
                {
                    "event": "approval_waiting",
                    "model": model,
                    "version": str(v.version),
                    "waiting_hours": round(ages[str(v.version)] / 3600, 1),
                    "message": f"{model} version {v.version} has waited "
                    f"{ages[str(v.version)] / 3600:.1f} h for a decision "
                    f"(limit {spec.monitoring.notify.approval_wait_hours:g} h)",
                },
            )
            mlc.set_model_version_tag(model, v.version, "approval_reminded_at", registry.now())
            reminded.append(str(v.version))
    champion = registry.champion_version(settings, model)
    promoted = None
    if champion is not None:
        at = champion.tags.get("promoted_at")
        promoted = (
            dt.datetime.fromisoformat(at).timestamp() if at else champion.creation_timestamp / 1000
        )
    samples: list[metrics.Sample] = [
        (
            "maestro_pending_approvals",
            "Versions that passed their gates, waiting for a decision",
            {},
            len(waiting),
        ),
        (
            "maestro_pending_approval_age_seconds",
            "How long the oldest pending version has waited",
            {},
            max(ages.values(), default=0.0),
        ),
        ("maestro_approval_wait_limit_seconds", "How long a version may wait (spec)", {}, limit),
        (
            "maestro_champion_max_age_seconds",
            "How old the champion may grow (spec)",
            {},
            spec.monitoring.champion_max_age_days * 86400,
        ),
        (
            "maestro_pipeline_watch_timestamp_seconds",
            "When pending approvals were last counted",
            {},
            now,
        ),
    ]
    if promoted is not None:
        samples.append(
            (
                "maestro_champion_promoted_timestamp_seconds",
                "When the serving champion was promoted",
                {},
                promoted,
            )
        )
    metrics.push(settings, "maestro_pipeline", model, samples)
    return {"model": model, "pending": sorted(ages), "reminded": reminded}

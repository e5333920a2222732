"""The figures only the jobs know (drift, model quality, last runs, pending approvals), pushed
to Prometheus's Pushgateway (`MAESTRO_PUSHGATEWAY_URL`), one group per job and model, so that a
newer push replaces an older one. Without a Pushgateway nothing is pushed."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from maestro.config import Settings

log = logging.getLogger(__name__)

Sample = tuple[str, str, dict[str, str], float]  # name, help, labels, value


def push(
    settings: Settings,
    job: str,
    model: str,
    samples: Iterable[Sample],
    group: dict[str, str] | None = None,
) -> bool:
    """Replace the group (`job`, `model`, and `group`'s labels) on the Pushgateway with
    `samples` (gauges)."""
    if not settings.pushgateway_url:
        return False
    from prometheus_client import CollectorRegistry, Gauge, push_to_gateway

    registry = CollectorRegistry()
    gauges: dict[str, Gauge] = {}
    for name, doc, labels, value in samples:
        names = ["model", *sorted(labels)]  # a label also in the group: the same value
        if name not in gauges:
            gauges[name] = Gauge(name, doc, names, registry=registry)
        gauges[name].labels(model=model, **labels).set(value)
    try:
        push_to_gateway(
            settings.pushgateway_url,
            job=job,
            grouping_key={"model": model, **(group or {})},
            registry=registry,
        )
    except OSError as error:  # the job's result stands; the figures come with its next run
        log.warning("Pushgateway %s did not take the figures: %s", settings.pushgateway_url, error)
        return False
    return True

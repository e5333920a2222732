"""The approval trigger's decisions from a version's tags, on a real MLflow registry, outside
any Airflow task runtime (so the tag is the only channel, as under `dag.test()`)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

import pytest

from maestro import tracking


@pytest.fixture
def trigger(settings, demo_versions):
    from airflow.sdk.timezone import utcnow

    from maestro.orchestration.approval import ApprovalOrTagTrigger

    demo_versions(settings, 1, validation_status="passed")

    def make(timeout: timedelta = timedelta(hours=1)) -> ApprovalOrTagTrigger:
        return ApprovalOrTagTrigger(
            ti_id=uuid.uuid4(),
            options=["Approve", "Reject"],
            defaults=["Reject"],
            params={},
            multiple=False,
            timeout_datetime=utcnow() + timeout,
            poke_interval=0.01,
            tracking_uri=settings.tracking_uri,
            model="demo",
            version="1",
            approvers=["admin"],
        )

    return make


def tag(settings, **tags: str) -> None:
    for key, value in tags.items():
        tracking.client(settings).set_model_version_tag("demo", "1", key, value)


async def first_event(trigger):
    async for event in trigger.run():
        return event.payload


def test_no_tag_means_no_event_and_an_approvers_tag_decides(settings, trigger):
    waiting = trigger()
    assert asyncio.run(waiting._tag_event()) is None
    tag(
        settings,
        approval="approved",
        approval_by="admin",
        approval_via="cli",
        approval_comment="ok",
    )
    payload = asyncio.run(first_event(trigger()))
    assert payload["chosen_options"] == ["Approve"] and payload["timedout"] is False
    assert payload["responded_by_user"] == {"id": "admin", "name": "admin"}
    assert (payload["via"], payload["comment"]) == ("cli", "ok")


def test_a_rejection_by_tag_chooses_reject(settings, trigger):
    tag(settings, approval="rejected", approval_by="admin")
    assert asyncio.run(first_event(trigger()))["chosen_options"] == ["Reject"]


def test_a_tag_by_someone_else_is_ignored_and_said_once(settings, trigger, capsys):
    tag(settings, approval="approved", approval_by="mallory")
    waiting = trigger()
    assert asyncio.run(waiting._tag_event()) is None
    assert asyncio.run(waiting._tag_event()) is None
    logged = capsys.readouterr()  # Airflow's structured log writes to the console
    assert (logged.out + logged.err).count("'mallory' may not decide on demo") == 1


def test_no_answer_in_time_rejects_as_a_timeout(settings, trigger):
    payload = asyncio.run(first_event(trigger(timeout=timedelta(seconds=-1))))
    assert payload["chosen_options"] == ["Reject"] and payload["timedout"] is True

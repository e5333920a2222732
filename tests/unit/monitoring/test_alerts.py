"""Notifications to a webhook on loopback: the event arrives as JSON; a URL named by an
environment variable is read from it, and an unset one notifies nobody."""

from __future__ import annotations

import pytest

from maestro.monitoring import alerts
from maestro.spec.sections import NotifySpec
from tests.support import webhook_receiver


@pytest.fixture
def receiver():
    with webhook_receiver() as hook:
        yield hook


EVENT = {"event": "drift", "model": "demo", "message": "dataset drift: age, income"}


def test_the_webhook_named_by_an_environment_variable_gets_the_event(receiver, monkeypatch):
    url, received = receiver
    monkeypatch.setenv("TEAM_HOOK", url)
    assert alerts.send(NotifySpec(webhook="${TEAM_HOOK}"), EVENT) == ["webhook"]
    assert received == [EVENT]


def test_an_unset_variable_or_a_dead_webhook_notifies_nobody_and_raises_nothing(monkeypatch):
    monkeypatch.delenv("TEAM_HOOK", raising=False)
    assert alerts.send(NotifySpec(webhook="${TEAM_HOOK}"), EVENT) == []
    assert alerts.send(NotifySpec(webhook="http://127.0.0.1:9/nobody"), EVENT) == []

"""Telling people: a JSON post to the spec's webhook and/or an e-mail, for drift, a failed run
and an approval waiting too long. Airflow's notifiers (`maestro.orchestration.notify`) call this."""

from __future__ import annotations

import logging
import os
import smtplib
from email.message import EmailMessage

from maestro.config import get_settings
from maestro.spec.sections import NotifySpec

log = logging.getLogger(__name__)


def webhook_url(notify: NotifySpec) -> str | None:
    """The webhook, `${VAR}` expanded from the environment (a URL may carry a secret); None
    when unset or when its variable is not set."""
    if not notify.webhook:
        return None
    url = os.path.expandvars(notify.webhook)
    return None if "${" in url or not url else url


def send(notify: NotifySpec, event: dict) -> list[str]:
    """Deliver `event` (it has at least `event`, `model` and `message`) to every recipient;
    returns where it went. A recipient that fails is logged, never fatal."""
    from maestro.web import client

    sent = []
    url = webhook_url(notify)
    if url:
        try:
            with client(url) as http:
                http.post("", json=event).raise_for_status()
            sent.append("webhook")
        except Exception as error:  # noqa: BLE001 - httpx raises several types
            log.error("notification to the webhook failed: %s", error)
    if notify.email:
        settings = get_settings()
        message = EmailMessage()
        message["Subject"] = f"[maestro] {event['model']}: {event['event']}"
        message["From"] = settings.smtp_from
        message["To"] = ", ".join(notify.email)
        message.set_content(event["message"])
        try:
            with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=10) as smtp:
                smtp.send_message(message)
            sent.append("email")
        except OSError as error:
            log.error("notification e-mail to %s failed: %s", notify.email, error)
    if not sent:
        log.info("nobody to notify of %s for %s", event["event"], event["model"])
    return sent

"""Human approval of a model version: in Airflow's Required Actions page, or by the version's
`approval` tag (MLflow UI, MLflow REST API, `maestro approve|reject`). Whichever answers first
decides; a timeout counts as rejection.

`ModelApprovalOperator` is Airflow's ApprovalOperator whose wait is a deferrable trigger that
watches both channels from the triggerer, so no worker slot is held while a human thinks. A
decision by tag is written back as the Required Action's response, so the Airflow UI shows the
request as answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator
from airflow.providers.standard.triggers.hitl import (
    HITLTrigger,
    HITLTriggerEventSuccessPayload,
)
from airflow.sdk.timezone import utcnow
from airflow.triggers.base import TriggerEvent

NO_HITL_CHANNEL = (AttributeError, ImportError)
DECISION_OPTION = {"approved": ApprovalOperator.APPROVE, "rejected": ApprovalOperator.REJECT}


def tag_decision(tracking_uri: str, model: str, version: str, approvers: list[str]) -> dict | None:
    """A decision set by tag, or None; one by someone not allowed to give it raises
    GovernanceError (`maestro.governance.decisions.authorised_decision`)."""
    from maestro.config import get_settings
    from maestro.governance.decisions import authorised_decision

    settings = get_settings().model_copy(update={"mlflow_tracking_uri": tracking_uri})
    return authorised_decision(settings, model, version, approvers)


class ApprovalOrTagTrigger(HITLTrigger):
    """Wait for the Required Action's response or the version's `approval` tag."""

    def __init__(
        self, *, tracking_uri: str, model: str, version: str, approvers: list[str], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.tracking_uri, self.model, self.version = tracking_uri, model, version
        self.approvers = approvers
        self._refused = ""

    def serialize(self) -> tuple[str, dict[str, Any]]:
        _, kwargs = super().serialize()
        kwargs |= {
            "tracking_uri": self.tracking_uri,
            "model": self.model,
            "version": self.version,
            "approvers": self.approvers,
        }
        return f"{type(self).__module__}.{type(self).__qualname__}", kwargs

    async def _tag_event(self) -> TriggerEvent | None:
        from airflow.sdk.execution_time.hitl import update_hitl_detail_response
        from asgiref.sync import sync_to_async

        from maestro.registry import GovernanceError

        try:
            decision = await sync_to_async(tag_decision)(
                self.tracking_uri, self.model, self.version, self.approvers
            )
        except GovernanceError as refused:
            if str(refused) != self._refused:  # say it once, not at every poll
                self._refused = str(refused)
                self.log.warning("decision by tag refused: %s; still waiting", refused)
            return None
        if decision is None:
            return None
        option = DECISION_OPTION[decision["decision"]]
        try:  # close the Required Action too; a human may have answered there meanwhile
            await sync_to_async(update_hitl_detail_response)(
                ti_id=self.ti_id, chosen_options=[option], params_input={}
            )
        except Exception as error:  # noqa: BLE001
            answered = await self._ui_event()
            if answered is not None:  # the UI answer came first: it decides
                return answered
            self.log.warning("could not close the Required Action (%s); the tag decides", error)
        by = decision["by"] or "(approval tag)"
        return TriggerEvent(
            {
                **HITLTriggerEventSuccessPayload(
                    chosen_options=[option],
                    params_input={},
                    responded_at=utcnow(),
                    responded_by_user={"id": by, "name": by},
                    timedout=False,
                ),
                "via": decision["via"],
                "comment": decision["comment"],
            }
        )

    async def _ui_event(self) -> TriggerEvent | None:
        """The Required Action's answer, if any. `dag.test()` runs triggers in its own process
        without Airflow's HITL channel (AttributeError), and outside any task runtime there is
        none either (ImportError): there the tag is the only way to answer."""
        try:
            return await self._handle_response()
        except NO_HITL_CHANNEL:
            return None

    async def _timeout_event(self) -> TriggerEvent:
        try:
            return await self._handle_timeout()
        except NO_HITL_CHANNEL:  # dag.test() or no task runtime: the default answer is Reject
            return TriggerEvent(
                HITLTriggerEventSuccessPayload(
                    chosen_options=list(self.defaults or [ApprovalOperator.REJECT]),
                    params_input={},
                    responded_at=utcnow(),
                    responded_by_user=None,
                    timedout=True,
                )
            )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while True:
            if self.timeout_datetime and self.timeout_datetime < utcnow():
                yield await self._timeout_event()
                return
            event = await self._ui_event() or await self._tag_event()
            if event:
                yield event
                return
            await asyncio.sleep(self.poke_interval)


class ModelApprovalOperator(ApprovalOperator):
    """Ask the model's approvers to approve a validated version; record who decided."""

    template_fields = (*ApprovalOperator.template_fields, "version")

    def __init__(
        self,
        *,
        model: str,
        version: str,
        approvers: list[str],
        response_timeout: timedelta,
        poke_interval: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            assigned_users=[{"id": a, "name": a} for a in approvers] or None,
            defaults=ApprovalOperator.REJECT,  # a timeout counts as rejection
            response_timeout=response_timeout,
            **kwargs,
        )
        self.model, self.version, self.approvers = model, version, approvers
        self.poke_interval = poke_interval
        self.response_timeout: timedelta = response_timeout  # required here, optional upstream

    def execute(self, context: Any) -> None:
        from airflow.sdk.execution_time.hitl import upsert_hitl_detail

        from maestro.config import get_settings

        settings = get_settings()
        ti_id = context["task_instance"].id
        upsert_hitl_detail(
            ti_id=ti_id,
            options=self.options,
            subject=self.subject,
            body=self.body,
            defaults=self.defaults,
            multiple=self.multiple,
            params=self.serialized_params,
            assigned_users=self.assigned_users,
        )
        self.defer(
            trigger=ApprovalOrTagTrigger(
                ti_id=ti_id,
                options=self.options,
                defaults=self.defaults,
                params=self.serialized_params,
                multiple=self.multiple,
                timeout_datetime=utcnow() + self.response_timeout,
                # how often the trigger looks for a tag: the worker's setting unless given
                poke_interval=self.poke_interval or settings.approval_poll_seconds,
                tracking_uri=settings.tracking_uri,
                model=self.model,
                version=str(self.version),
                approvers=self.approvers,
            ),
            method_name="execute_complete",
        )

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        from maestro.config import get_settings
        from maestro.governance.decisions import record_decision
        from maestro.vocabulary import APPROVED, REJECTED

        if event.get("timedout"):
            by, via, comment = "timeout", "timeout", f"no decision within {self.response_timeout}"
        else:
            user = event.get("responded_by_user") or {}
            by = user.get("name") or user.get("id") or "unknown"
            via, comment = event.get("via", "airflow-ui"), event.get("comment", "")
        chosen = (event.get("chosen_options") or [self.REJECT])[0]
        decision = APPROVED if chosen == self.APPROVE else REJECTED
        record_decision(get_settings(), self.model, str(self.version), decision, by, comment, via)
        self.log.info("%s version %s %s by %s via %s", self.model, self.version, decision, by, via)
        return super().execute_complete(context, event)

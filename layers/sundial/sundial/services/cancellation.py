"""Ending runs from outside: cancel one invocation, cancel a trigger's open ones, use up a one-time trigger."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sundial.adapters.agent_http import AttemptOutcome
from sundial.adapters.aws_retry import Backoff
from sundial.deps import Deps
from sundial.domain.errors import ConflictError
from sundial.domain.schedule import schedule_of
from sundial.services import ending
from sundial.store import invocations as invocation_store
from sundial.store import triggers as trigger_store
from sundial.store.records import InvocationRecord, TriggerRecord

logger = logging.getLogger(__name__)


def stop_execution(deps: Deps, record: InvocationRecord, cause: str) -> bool:
    """Stop the record's execution if it still runs; an already finished or unknown one is fine.

    True when Step Functions took the stop (a cascade counts it).
    """
    if not record.execution_arn:
        return False
    sfn = deps.sfn
    try:
        Backoff().call(lambda: sfn.stop_execution(executionArn=record.execution_arn, cause=cause))
    except sfn.exceptions.ExecutionDoesNotExist:
        logger.info("execution %s does not exist (not started yet)", record.execution_arn)
        return False
    return True


def use_up(deps: Deps, tenant_id: str, trigger_id: str, incarnation: str, schedule_version: int) -> bool:
    """The last occurrence of a trigger's schedule has ended: disable it, unless it changed since (see the store)."""
    if trigger_store.use_up(tenant_id, trigger_id, incarnation, schedule_version, deps.now()):
        return True
    logger.info("trigger %s has moved on from schedule version %s; left as it is", trigger_id, schedule_version)
    return False


def use_up_if_last(deps: Deps, record: InvocationRecord) -> None:
    """After a scheduled occurrence ended without running to its end: if it was the schedule's last
    (a one-time trigger's, or the last before endAt), the trigger is finished as if it had run."""
    if record.kind != "scheduled" or record.schedule_version is None:
        return
    trigger = trigger_store.find(record.tenant_id, record.trigger_id)
    if trigger is None or trigger.incarnation != record.incarnation:
        return
    if schedule_of(trigger).next_after(record.scheduled_for) is None:
        use_up(deps, record.tenant_id, record.trigger_id, record.incarnation, int(record.schedule_version))


def cancel(deps: Deps, record: InvocationRecord, reason: str, *, use_up: bool = True) -> InvocationRecord:
    """pending/running → cancelled and stop its execution; cancelled stays cancelled; finished → 409.

    A cancelled scheduled occurrence of a one-time trigger is used up like one that ran, unless
    `use_up` is False (a delete or cascade that removes the trigger next).
    """
    return _cancel(deps, record, reason, use_up=use_up)[0]


def _cancel(deps: Deps, record: InvocationRecord, reason: str, *, use_up: bool) -> tuple[InvocationRecord, bool]:
    """`cancel`, and whether this call stopped the execution."""
    if record.status == "cancelled":
        return record, False
    in_flight = int(record.attempt_number) + 1 if record.status == "running" else None
    if record.status in invocation_store.FINISHED or not ending.finish(deps, record, "cancelled", reason):
        invocation_store.refresh(record)
        if record.status == "cancelled":
            return record, False
        raise ConflictError(f"Invocation '{record.invocation_id}' is already {record.status}")
    if use_up:
        use_up_if_last(deps, record)
    stopped = stop_execution(deps, record, reason)
    if in_flight is not None:
        tell_agent(deps, record, in_flight)
    return record, stopped


def tell_agent(deps: Deps, record: InvocationRecord, attempt_number: int) -> None:
    """Best effort: POST the cancel to `AGENT_CANCEL_URL`; whatever the agent answers, the run stays cancelled."""
    try:
        canceller = deps.agent_canceller
        if canceller is None:
            return
        result = canceller.cancel(record.invocation_id, attempt_number)
    except Exception as error:  # a misconfigured URL or an unreadable token: the cancel stands regardless
        logger.warning("the agent was not told of the cancel of %s: %s", record.invocation_id, error.__class__.__name__)
        return
    if result.outcome != AttemptOutcome.SUCCEEDED:
        logger.warning("the agent was not told of the cancel of %s: %s", record.invocation_id, result.error)


@dataclass(frozen=True)
class Cancelled:
    """What cancelling a trigger's open invocations did: how many it cancelled, and stopped executions of."""

    invocations: int = 0
    executions_stopped: int = 0


def cancel_all_open(deps: Deps, trigger: TriggerRecord, reason: str) -> Cancelled:
    """Cancel every unfinished invocation of a trigger that is about to be deleted."""
    cancelled = stopped = 0
    for record in invocation_store.open_invocations(trigger.tenant_id, trigger.trigger_id, trigger.incarnation):
        try:
            _, stopped_now = _cancel(deps, record, reason, use_up=False)
        except ConflictError:
            continue
        cancelled += 1
        stopped += int(stopped_now)
    return Cancelled(cancelled, stopped)

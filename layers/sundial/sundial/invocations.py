"""Invocation records: creation, the open-runs register, state changes, cancellation and reads.

Their ids and execution names come from `sundial.domain.naming`, so a re-driven claim or a repeated
run-now request finds what the first one made.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from datetime import datetime, timedelta
from typing import Any

from pynamodb.exceptions import DoesNotExist
from pynamodb.expressions.update import Action

from sundial.aws_retry import Backoff
from sundial.contracts.api import Attempt, Invocation, InvocationKind, InvocationStatus
from sundial.domain.errors import ConflictError, NotFoundError
from sundial.domain.naming import execution_arn_for
from sundial.domain.retry_policy import UNFINISHED_RETENTION
from sundial.runtime import Runtime
from sundial.storage import (
    OPEN_REGISTER_KEY,
    InvocationRecord,
    OpenRegisterRecord,
    TriggerRecord,
    condition_held,
    invocation_partition,
    trigger_pk,
)

logger = logging.getLogger(__name__)

UNFINISHED: frozenset[str] = frozenset({"pending", "running"})
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled", "skipped"})


def expiry_for(runtime: Runtime, moment: datetime, *, finished: bool) -> datetime:
    """When TTL may delete a record: the retention after it finished, and never while its run may still go on."""
    retention = timedelta(days=runtime.settings.invocation_retention_days)
    return moment + retention if finished else moment + max(retention, UNFINISHED_RETENTION)


def new_invocation(
    runtime: Runtime,
    *,
    tenant_id: str,
    project_id: str,
    agent_id: str,
    trigger_id: str,
    incarnation: str,
    kind: InvocationKind,
    invocation_id: str,
    idempotency_key: str,
    scheduled_for: datetime,
    ref: str,
    execution_name: str,
    schedule_version: int | None = None,
    rerun_of: str | None = None,
    execution_arn: str | None = None,
) -> InvocationRecord:
    """A pending record; `execution_arn` defaults to the one `execution_name` gets in the configured machine."""
    now = runtime.now()
    key = invocation_partition(tenant_id, trigger_id, incarnation)
    if execution_arn is None and runtime.settings.state_machine_arn:
        execution_arn = execution_arn_for(runtime.settings.state_machine_arn, execution_name)
    return InvocationRecord(
        key,
        invocation_id,
        tenant_id=tenant_id,
        project_id=project_id,
        agent_id=agent_id,
        trigger_id=trigger_id,
        incarnation=incarnation,
        kind=kind,
        status="pending",
        scheduled_for=scheduled_for,
        created_at=now,
        attempt_number=0,
        attempts=[],
        conversation_ids=[],
        ref=ref,
        idempotency_key=idempotency_key,
        execution_name=execution_name,
        execution_arn=execution_arn,
        schedule_version=schedule_version,
        rerun_of=rerun_of,
        expires_at=expiry_for(runtime, now, finished=False),
    )


def _register(runtime: Runtime, partition: str, invocation_id: str, *, add: bool) -> None:
    """Add an id to (or drop it from) its incarnation's register of unfinished invocations."""
    register = OpenRegisterRecord(partition)
    ids = {invocation_id}
    if add:
        expires = expiry_for(runtime, runtime.now(), finished=False)
        register.update(actions=[OpenRegisterRecord.open_ids.add(ids), OpenRegisterRecord.expires_at.set(expires)])
    else:
        register.update(actions=[OpenRegisterRecord.open_ids.delete(ids)])


def put_if_absent(runtime: Runtime, record: InvocationRecord) -> bool:
    """Register the record as unfinished, then create it unless it exists; True when this call created it.

    Registered first, so no moment exists where it is pending but unregistered; a crash in between
    leaves an id with no record, which readers pass over.
    """
    _register(runtime, record.trigger_key, record.invocation_id, add=True)
    return condition_held(lambda: record.save(condition=InvocationRecord.invocation_id.does_not_exist()))


def load(tenant_id: str, trigger_id: str, incarnation: str, invocation_id: str) -> InvocationRecord:
    partition = invocation_partition(tenant_id, trigger_id, incarnation)
    try:
        return InvocationRecord.get(partition, invocation_id, consistent_read=True)
    except DoesNotExist:
        raise NotFoundError(f"Invocation '{invocation_id}' not found") from None


def finish(
    runtime: Runtime,
    record: InvocationRecord,
    status: InvocationStatus,
    error: str | None = None,
    also: Sequence[Any] = (),
    only_from: Collection[str] = UNFINISHED,
) -> bool:
    """Move an unfinished invocation to a final status (with the update actions `also`, in the same write).

    False when it was already final: a cancellation is never overwritten. `only_from` narrows the
    statuses it may leave (e.g. only `pending`, for a run that must not be stopped once running).
    The retention clock starts at the end, so a long run is never deleted before its history is kept.
    """
    now = runtime.now()
    actions: list[Any] = [
        *also,
        InvocationRecord.status.set(status),
        InvocationRecord.completed_at.set(now),
        InvocationRecord.expires_at.set(expiry_for(runtime, now, finished=True)),
    ]
    if error is not None:
        actions.append(InvocationRecord.error.set(error))
    if not condition_held(lambda: record.update(actions=actions, condition=InvocationRecord.status.is_in(*only_from))):
        return False
    _register(runtime, record.trigger_key, record.invocation_id, add=False)
    return True


def stop_execution(runtime: Runtime, record: InvocationRecord, cause: str) -> None:
    """Stop the record's execution if it still runs; an already finished or unknown one is fine."""
    if not record.execution_arn:
        return
    sfn = runtime.sfn
    try:
        Backoff().call(lambda: sfn.stop_execution(executionArn=record.execution_arn, cause=cause))
    except sfn.exceptions.ExecutionDoesNotExist:
        logger.info("execution %s does not exist (not started yet)", record.execution_arn)


def use_up_one_time_trigger(
    runtime: Runtime, trigger: TriggerRecord, incarnation: str, schedule_version: int | None
) -> bool:
    """A one-time trigger's occurrence has ended: enabled=false and out of the due index (SPEC §4).

    One conditional write, which leaves alone a cron trigger, a trigger re-scheduled since the claim
    (every change of runAt or enabled bumps schedule_version) and a re-created one (another
    incarnation). True when it disabled the trigger.
    """
    actions: list[Action] = [
        TriggerRecord.enabled.set(False),
        TriggerRecord.schedule_version.add(1),
        TriggerRecord.revision.add(1),
        TriggerRecord.updated_at.set(runtime.now()),
        TriggerRecord.next_run_at.remove(),
        TriggerRecord.due_shard.remove(),
        TriggerRecord.due_at.remove(),
    ]
    unchanged_one_time = (
        (TriggerRecord.incarnation == incarnation)
        & (TriggerRecord.schedule_version == schedule_version)
        & TriggerRecord.run_at.exists()
    )
    if condition_held(lambda: trigger.update(actions=actions, condition=unchanged_one_time)):
        return True
    logger.info(
        "trigger %s is not a one-time trigger at schedule version %s; left as it is", trigger.pk, schedule_version
    )
    return False


def cancel(runtime: Runtime, record: InvocationRecord, reason: str, *, use_up: bool = True) -> InvocationRecord:
    """pending/running → cancelled and stop its execution; cancelled stays cancelled; finished → 409.

    A cancelled scheduled occurrence of a one-time trigger is used up like one that ran, unless
    `use_up` is False (a cascade that deletes the trigger next).
    """
    if record.status == "cancelled":
        return record
    if record.status in FINISHED or not finish(runtime, record, "cancelled", reason):
        record.refresh(consistent_read=True)
        if record.status == "cancelled":
            return record
        raise ConflictError(f"Invocation '{record.invocation_id}' is already {record.status}")
    if use_up and record.kind == "scheduled" and record.schedule_version is not None:
        trigger = TriggerRecord(trigger_pk(record.tenant_id, record.trigger_id))
        use_up_one_time_trigger(runtime, trigger, record.incarnation, int(record.schedule_version))
    stop_execution(runtime, record, reason)
    return record


def open_invocations(tenant_id: str, trigger_id: str, incarnation: str) -> list[InvocationRecord]:
    """An incarnation's pending/running invocations, oldest first, by strongly consistent reads.

    The register may still name a run that finished a moment ago (its finish and its deregistration
    are two writes), or one whose record is not written yet: each is read again and kept only if open.
    """
    partition = invocation_partition(tenant_id, trigger_id, incarnation)
    try:
        register = OpenRegisterRecord.get(partition, OPEN_REGISTER_KEY, consistent_read=True)
    except DoesNotExist:
        return []
    found: list[InvocationRecord] = []
    for invocation_id in sorted(register.open_ids or ()):
        try:
            record = InvocationRecord.get(partition, invocation_id, consistent_read=True)
        except DoesNotExist:
            continue
        if record.status in UNFINISHED:
            found.append(record)
    return found


def cancel_all_open(runtime: Runtime, trigger: TriggerRecord, reason: str) -> int:
    """Cancel every unfinished invocation of a trigger that is about to be deleted; returns how many."""
    cancelled = 0
    for record in open_invocations(trigger.tenant_id, trigger.trigger_id, trigger.incarnation):
        try:
            cancel(runtime, record, reason, use_up=False)
        except ConflictError:
            continue
        cancelled += 1
    return cancelled


def to_api(record: InvocationRecord) -> Invocation:
    return Invocation(
        id=record.invocation_id,
        trigger_id=record.trigger_id,
        tenant_id=record.tenant_id,
        project_id=record.project_id,
        agent_id=record.agent_id,
        kind=record.kind,
        status=record.status,
        scheduled_for=record.scheduled_for,
        started_at=record.started_at,
        completed_at=record.completed_at,
        attempt_number=int(record.attempt_number),
        attempts=[Attempt.model_validate(item) for item in record.attempts or []],
        conversation_ids=list(record.conversation_ids or []),
        ref=record.ref,
        idempotency_key=record.idempotency_key,
        execution_arn=record.execution_arn,
        error=record.error,
    )

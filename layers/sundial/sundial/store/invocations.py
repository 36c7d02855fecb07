"""Invocation records: creation, the open-runs register, state changes and reads.

Their ids and execution names come from `sundial.domain.naming`, so a re-driven claim or a repeated
run-now request finds what the first one made.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from pynamodb.exceptions import DoesNotExist, TransactWriteError
from pynamodb.transactions import TransactWrite

from sundial.contracts.api import InvocationKind, InvocationStatus
from sundial.deps import Deps
from sundial.domain.errors import NotFoundError
from sundial.domain.naming import execution_arn_for
from sundial.domain.retry_policy import UNFINISHED_RETENTION
from sundial.store.records import (
    OPEN_REGISTER_KEY,
    REGISTER_SHARDS,
    IdempotencyRecord,
    InvocationRecord,
    OpenRegisterRecord,
    TriggerRecord,
    condition_held,
    invocation_partition,
    project_key,
    register_shard_for,
)
from sundial.store.triggers import MAX_RUNS, stopped_actions

logger = logging.getLogger(__name__)

UNFINISHED: frozenset[str] = frozenset({"pending", "running"})
FINISHED: frozenset[str] = frozenset({"completed", "failed", "cancelled", "skipped"})


def expiry_for(deps: Deps, moment: datetime, *, finished: bool) -> datetime:
    """When TTL may delete a record: the retention after it finished, and never while its run may still go on."""
    retention = timedelta(days=deps.settings.invocation_retention_days)
    return moment + retention if finished else moment + max(retention, UNFINISHED_RETENTION)


def new_invocation(
    deps: Deps,
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
    starts_at: datetime | None = None,
) -> InvocationRecord:
    """A pending record; `execution_arn` defaults to the one `execution_name` gets in the configured machine."""
    now = deps.now()
    key = invocation_partition(tenant_id, trigger_id, incarnation)
    if execution_arn is None and deps.settings.state_machine_arn:
        execution_arn = execution_arn_for(deps.settings.state_machine_arn, execution_name)
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
        starts_at=starts_at if starts_at is not None and starts_at != scheduled_for else None,
        expires_at=expiry_for(deps, now, finished=False),
        project_key=project_key(tenant_id, project_id),
    )


def _register(deps: Deps, partition: str, invocation_id: str, *, add: bool) -> None:
    """Add an id to (or drop it from) its incarnation's register of unfinished invocations."""
    register = OpenRegisterRecord(partition)
    ids = {invocation_id}
    if add:
        expires = expiry_for(deps, deps.now(), finished=False)
        register.update(
            actions=[
                OpenRegisterRecord.open_ids.add(ids),
                OpenRegisterRecord.expires_at.set(expires),
                OpenRegisterRecord.register_shard.set(register_shard_for(partition)),
            ]
        )
    else:
        register.update(actions=[OpenRegisterRecord.open_ids.delete(ids)])


def put_if_absent(deps: Deps, record: InvocationRecord) -> bool:
    """Register the record as unfinished, then create it unless it exists; True when this call created it.

    Registered first, so no moment exists where it is pending but unregistered; a crash in between
    leaves an id with no record, which readers pass over.
    """
    _register(deps, record.trigger_key, record.invocation_id, add=True)
    return condition_held(lambda: record.save(condition=InvocationRecord.invocation_id.does_not_exist()))


def load(tenant_id: str, trigger_id: str, incarnation: str, invocation_id: str) -> InvocationRecord:
    partition = invocation_partition(tenant_id, trigger_id, incarnation)
    try:
        return InvocationRecord.get(partition, invocation_id, consistent_read=True)
    except DoesNotExist:
        raise NotFoundError(f"Invocation '{invocation_id}' not found") from None


@dataclass(frozen=True)
class AttemptWrite:
    """An invocation's attempts after one more was made: written with its end, or alone when the run goes on."""

    attempts: list[dict[str, Any]]
    attempt_number: int
    conversation_ids: list[str] = field(default_factory=list)

    def actions(self) -> list[Any]:
        conversation_ids: Any = self.conversation_ids  # pynamodb's stubs type it as a list of attributes
        return [
            InvocationRecord.attempts.set(self.attempts),
            InvocationRecord.attempt_number.set(self.attempt_number),
            InvocationRecord.conversation_ids.set(conversation_ids),
        ]


def finish(
    deps: Deps,
    record: InvocationRecord,
    status: InvocationStatus,
    error: str | None = None,
    attempt: AttemptWrite | None = None,
    only_from: Collection[str] = UNFINISHED,
) -> bool:
    """Move an unfinished invocation to a final status (with `attempt` recorded in the same write).

    False when it was already final: a cancellation is never overwritten. `only_from` narrows the
    statuses it may leave (e.g. only `pending`, for a run that must not be stopped once running).
    The retention clock starts at the end, so a long run is never deleted before its history is kept.
    """
    now = deps.now()
    actions: list[Any] = [
        *(attempt.actions() if attempt is not None else []),
        InvocationRecord.status.set(status),
        InvocationRecord.completed_at.set(now),
        InvocationRecord.expires_at.set(expiry_for(deps, now, finished=True)),
    ]
    if error is not None:
        actions.append(InvocationRecord.error.set(error))
    if not condition_held(lambda: record.update(actions=actions, condition=InvocationRecord.status.is_in(*only_from))):
        return False
    try:
        _register(deps, record.trigger_key, record.invocation_id, add=False)
    except Exception:
        # The run is final either way; a leftover id is passed over by every reader (each re-reads the
        # record), so this must not stop what follows the end of a run (its event, lastRun, a pause).
        logger.warning("finished invocation %s is still named in its register", record.invocation_id, exc_info=True)
    return True


def open_invocations(tenant_id: str, trigger_id: str, incarnation: str) -> list[InvocationRecord]:
    """An incarnation's pending/running invocations, oldest first, by strongly consistent reads."""
    return open_invocations_in(invocation_partition(tenant_id, trigger_id, incarnation))


def open_invocations_in(partition: str) -> list[InvocationRecord]:
    """The pending/running invocations of one incarnation's partition, oldest first, read consistently.

    The register may still name a run that finished a moment ago (its finish and its deregistration
    are two writes), or one whose record is not written yet: each is read again and kept only if open.
    """
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


# Rounds of compare-and-set on the waiting place when other runs of the trigger contend for it.
MAX_PLACE_TRIES = 8


def take_waiting_place(partition: str, invocation_id: str) -> bool:
    """Claim the incarnation's one place to wait (overlapPolicy buffer_one); True when this run holds it.

    A compare-and-set on the register: the place is free when no one holds it or its holder is no
    longer pending (it started, ended or was cancelled); a holder keeps it on every later call. Two
    runs contending for it cannot both win: each write is conditioned on the holder it read.
    """
    for _ in range(MAX_PLACE_TRIES):
        try:
            register = OpenRegisterRecord.get(partition, OPEN_REGISTER_KEY, consistent_read=True)
            holder = register.waiting_id
        except DoesNotExist:
            register, holder = OpenRegisterRecord(partition), None
        if holder == invocation_id:
            return True
        if holder is not None and _is_pending(partition, holder):
            return False
        unchanged = (
            OpenRegisterRecord.waiting_id.does_not_exist()
            if holder is None
            else OpenRegisterRecord.waiting_id == holder
        )
        if _set_holder(register, invocation_id, unchanged):
            return True
    raise RuntimeError(f"the waiting place of {partition} kept changing; the step is retried")


def _set_holder(register: OpenRegisterRecord, invocation_id: str, unchanged: Any) -> bool:
    return condition_held(
        lambda: register.update(actions=[OpenRegisterRecord.waiting_id.set(invocation_id)], condition=unchanged)
    )


def _is_pending(partition: str, invocation_id: str) -> bool:
    try:
        return InvocationRecord.get(partition, invocation_id, consistent_read=True).status == "pending"
    except DoesNotExist:
        return False


def project_history(
    partition: str, low_key: str, high_key: str, start: dict[str, str] | None, batch: int
) -> Iterator[InvocationRecord]:
    """A project's invocations with ids in [low_key, high_key], newest first, after `start`.

    The index holds keys only; the records are read back `batch` at a time, strongly consistent, in
    the index's order. One removed by TTL in between is passed over.
    """
    keys = InvocationRecord.project_history.query(
        partition,
        range_key_condition=InvocationRecord.invocation_id.between(low_key, high_key),
        scan_index_forward=False,
        last_evaluated_key={name: {"S": value} for name, value in start.items()} if start else None,
        page_size=batch,
    )
    pending: list[tuple[str, str]] = []
    for key in keys:
        pending.append((str(key.trigger_key), str(key.invocation_id)))
        if len(pending) == batch:
            yield from _read_in_order(pending)
            pending = []
    yield from _read_in_order(pending)


def _read_in_order(keys: list[tuple[str, str]]) -> Iterator[InvocationRecord]:
    found = {
        (str(record.trigger_key), str(record.invocation_id)): record
        for record in InvocationRecord.batch_get(keys, consistent_read=True)
    }
    for key in keys:
        if key in found:
            yield found[key]


def registered_partitions(first_shard: int = 0) -> Iterator[str]:
    """Every incarnation partition whose register names unfinished runs, by the registers index.

    Shards are walked from `first_shard` round, so passes cut short do not always leave the same ones.
    """
    for step in range(REGISTER_SHARDS):
        for register in OpenRegisterRecord.registers.query((first_shard + step) % REGISTER_SHARDS):
            if register.open_ids:
                yield str(register.trigger_key)


def save_attempt(record: InvocationRecord, attempt: AttemptWrite, *, while_open: bool = True) -> bool:
    """Record an attempt of a run that goes on (a retry follows); False when the run had ended meanwhile.

    With `while_open=False` the attempt is recorded whatever the status (an attempt that came back
    after a cancel: it happened, and its record says so, but the status stays as it is).
    """
    if not while_open:
        record.update(actions=attempt.actions())
        return True
    return condition_held(
        lambda: record.update(actions=attempt.actions(), condition=InvocationRecord.status.is_in(*UNFINISHED))
    )


def refresh(record: InvocationRecord) -> None:
    """Read the record again, strongly consistent: after a conditional write lost to another one."""
    record.refresh(consistent_read=True)


def mark_running(record: InvocationRecord, ref: str, now: datetime) -> bool:
    """pending → running (with the trigger's current ref); False when it was cancelled or finished meanwhile."""
    actions = _running_actions(ref, now)
    if condition_held(lambda: record.update(actions=actions, condition=InvocationRecord.status == "pending")):
        return True
    refresh(record)
    return record.status == "running"


def _running_actions(ref: str, now: datetime) -> list[Any]:
    return [InvocationRecord.status.set("running"), InvocationRecord.started_at.set(now), InvocationRecord.ref.set(ref)]


def mark_running_counted(
    record: InvocationRecord, trigger: TriggerRecord, now: datetime, *, last: bool
) -> Literal["running", "not_pending", "trigger_changed"]:
    """pending → running and one more of the trigger's `runs_started`, in one transaction (maxRuns).

    Both or neither: a run counts exactly once, however often the step is retried, and two runs
    racing for the last remaining run cannot both start. The count is conditioned on the count and
    maxRuns read and the incarnation, and bumps `revision`, so an edit of maxRuns read before it
    conflicts. The `last` run also finishes the trigger. "trigger_changed": read it again, decide anew.
    """
    observed = int(trigger.runs_started or 0)
    unchanged_count = TriggerRecord.runs_started == observed
    if observed == 0:
        unchanged_count = unchanged_count | TriggerRecord.runs_started.does_not_exist()
    count: list[Any] = [TriggerRecord.runs_started.set(observed + 1)]
    count += stopped_actions(now, MAX_RUNS) if last else [TriggerRecord.revision.add(1)]
    unchanged = (
        (TriggerRecord.incarnation == trigger.incarnation)
        & (TriggerRecord.max_runs == trigger.max_runs)
        & unchanged_count
    )
    connection = TriggerRecord._get_connection().connection
    try:
        with TransactWrite(connection=connection) as transaction:
            transaction.update(
                record, actions=_running_actions(trigger.ref, now), condition=InvocationRecord.status == "pending"
            )
            transaction.update(TriggerRecord(trigger.pk), actions=count, condition=unchanged)
    except TransactWriteError as error:
        reasons = [reason.code if reason is not None else None for reason in error.cancellation_reasons]
        if not reasons or "ConditionalCheckFailed" not in reasons:
            raise
        if reasons[0] == "ConditionalCheckFailed":
            refresh(record)
            return "running" if record.status == "running" else "not_pending"
        return "trigger_changed"
    record.status, record.started_at, record.ref = "running", now, trigger.ref
    return "running"


def history_page(
    partition: str, low_key: str, high_key: str, status: str | None, limit: int, start: dict[str, str] | None
) -> list[InvocationRecord]:
    """Up to `limit` invocations of an incarnation with ids in [low_key, high_key], newest first, after `start`."""
    return list(
        InvocationRecord.query(
            partition,
            range_key_condition=InvocationRecord.invocation_id.between(low_key, high_key),
            filter_condition=(InvocationRecord.status == status) if status else None,
            scan_index_forward=False,
            limit=limit,
            last_evaluated_key={name: {"S": value} for name, value in start.items()} if start else None,
        )
    )


def idempotent_target(partition: str, key_hash: str, candidate_id: str, expires_at: datetime) -> str:
    """The invocation id an idempotency key stands for: `candidate_id` if this call is the key's first use."""
    mapping = IdempotencyRecord(
        f"{partition}#idempotency", key_hash, target_invocation_id=candidate_id, expires_at=expires_at
    )
    if condition_held(lambda: mapping.save(condition=IdempotencyRecord.invocation_id.does_not_exist())):
        return candidate_id
    stored = IdempotencyRecord.get(mapping.trigger_key, key_hash, consistent_read=True)
    return str(stored.target_invocation_id)

"""Cascade records, scope tombstones, and the reads and writes a cascade's pages make.

A page is planned, worked and committed: the plan and the commit are each one conditional write on
the cascade record keyed by its page number, so a page re-run after a crash picks up its own plan
and counts nothing twice (docs/decisions.md, "Cascades").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pynamodb.exceptions import DeleteError, DoesNotExist

from sundial.domain.cascade import CascadeScope
from sundial.store.records import (
    OPEN_REGISTER_KEY,
    CascadeRecord,
    OpenRegisterRecord,
    ScopeTombstoneRecord,
    TriggerRecord,
    cascade_pk,
    condition_held,
    invocation_partition,
    project_key,
    run_as_key,
    tombstone_pk,
)

RUNNING = "running"
COMPLETED = "completed"


def scope_of(record: CascadeRecord) -> CascadeScope:
    return CascadeScope(
        str(record.tenant_id),
        record.scope_kind,  # type: ignore[arg-type]
        project_id=record.project_id,
        agent_id=record.agent_id,
        ref=record.ref,
        user_id=record.user_id,
    )


def new_record(scope: CascadeScope, cascade_id: str, origin: str, now: datetime) -> CascadeRecord:
    return CascadeRecord(
        cascade_pk(scope.tenant_id, cascade_id),
        tenant_id=scope.tenant_id,
        cascade_id=cascade_id,
        scope_kind=scope.kind,
        project_id=scope.project_id,
        agent_id=scope.agent_id,
        ref=scope.ref,
        user_id=scope.user_id,
        origin=origin,
        state=RUNNING,
        accepted_at=now,
        found=0,
        deleted=0,
        invocations_cancelled=0,
        executions_stopped=0,
        pass_number=1,
        page_number=0,
        deleted_before_pass=0,
    )


def create(record: CascadeRecord) -> bool:
    """Write a new cascade; False when one with its id exists (a repeated event or request)."""
    return condition_held(lambda: record.save(condition=CascadeRecord.pk.does_not_exist()))


def raise_tombstone(record: CascadeRecord) -> None:
    """Put the cascade's tombstone on its scope, unless a later cascade of the scope holds it already.

    Idempotent, so accepting a repeat of a cascade whose first acceptance broke off puts it up then.
    (Not one transaction with the cascade record: a transaction's cost grows with the table in the
    emulator, and the order alone is enough.)
    """
    tombstone = ScopeTombstoneRecord(
        tombstone_pk(scope_of(record).key),
        scope_kind=record.scope_kind,
        cascade_id=record.cascade_id,
        accepted_at=record.accepted_at,
        state=RUNNING,
    )
    ours_or_older = (
        ScopeTombstoneRecord.pk.does_not_exist()
        | (ScopeTombstoneRecord.cascade_id == record.cascade_id)
        | (ScopeTombstoneRecord.accepted_at < record.accepted_at)
    )
    condition_held(lambda: tombstone.save(condition=ours_or_older))


def find(tenant_id: str, cascade_id: str) -> CascadeRecord | None:
    try:
        return CascadeRecord.get(cascade_pk(tenant_id, cascade_id), consistent_read=True)
    except DoesNotExist:
        return None


def tombstones(scope_keys: Iterable[str]) -> list[ScopeTombstoneRecord]:
    """The tombstones of these scopes, by one strongly consistent BatchGetItem."""
    keys = [tombstone_pk(key) for key in scope_keys]
    return list(ScopeTombstoneRecord.batch_get(keys, consistent_read=True))


@dataclass(frozen=True)
class IndexPage:
    trigger_pks: list[str]
    next_cursor: dict[str, str] | None


def scope_page(scope: CascadeScope, cursor: dict[str, str] | None, limit: int) -> IndexPage:
    """Up to `limit` index entries of the scope's triggers after `cursor` (the index may lag)."""
    start = {name: {"S": value} for name, value in cursor.items()} if cursor else None
    if scope.kind == "user":
        results: Any = TriggerRecord.by_run_as.query(
            run_as_key(scope.tenant_id, scope.user_id), limit=limit, last_evaluated_key=start
        )
    else:
        assert scope.project_id is not None
        results = TriggerRecord.by_project.query(
            project_key(scope.tenant_id, scope.project_id),
            range_key_condition=(
                TriggerRecord.agent_trigger.startswith(f"{scope.agent_id}#") if scope.kind == "agent" else None
            ),
            filter_condition=TriggerRecord.ref == scope.ref if scope.kind == "ref" else None,
            limit=limit,
            last_evaluated_key=start,
            attributes_to_get=["pk"],
        )
    pks = [str(item.pk) for item in results]
    last = results.last_evaluated_key
    return IndexPage(pks, {name: value["S"] for name, value in last.items()} if last else None)


# What a cascade reads of a trigger: where it is, which incarnation, and its scopes.
CASCADE_VIEW = ["pk", "tenant_id", "project_id", "agent_id", "trigger_id", "incarnation", "ref", "run_as_user_id"]


def read_triggers(pks: list[str]) -> dict[str, TriggerRecord]:
    """The triggers that still exist, by strongly consistent reads of only what a cascade needs."""
    found = TriggerRecord.batch_get(pks, consistent_read=True, attributes_to_get=CASCADE_VIEW)
    return {str(record.pk): record for record in found}


def open_partitions(triggers: Iterable[TriggerRecord]) -> set[str]:
    """The invocation partitions of these triggers whose register names unfinished runs."""
    keys = [(invocation_partition(t.tenant_id, t.trigger_id, t.incarnation), OPEN_REGISTER_KEY) for t in triggers]
    return {
        str(register.trigger_key)
        for register in OpenRegisterRecord.batch_get(keys, consistent_read=True)
        if register.open_ids
    }


def _same_page(record: CascadeRecord) -> Any:
    return CascadeRecord.page_number == int(record.page_number)


def plan_page(record: CascadeRecord, planned: list[TriggerRecord], next_cursor: dict[str, str] | None) -> bool:
    """Remember the page's triggers (and count them found) and move the cursor past them."""
    # pynamodb's stubs type a list of strings as a list of attributes
    pks: Any = [str(t.pk) for t in planned]
    incarnations: Any = [str(t.incarnation) for t in planned]
    actions: list[Any] = [
        CascadeRecord.plan.set(pks),
        CascadeRecord.plan_incarnations.set(incarnations),
        CascadeRecord.plan_is_last.set(next_cursor is None),
        CascadeRecord.found.add(len(planned)),
        CascadeRecord.cursor.set(next_cursor) if next_cursor is not None else CascadeRecord.cursor.remove(),
        CascadeRecord.page_number.add(1),
    ]
    if condition_held(lambda: record.update(actions=actions, condition=_same_page(record))):
        return True
    record.refresh(consistent_read=True)
    return False


def delete_trigger(trigger: TriggerRecord, scope: CascadeScope) -> bool:
    """Delete the trigger if it is still this incarnation and still in the scope; True when this did."""
    condition = TriggerRecord.incarnation == trigger.incarnation
    if scope.kind == "ref":
        condition &= TriggerRecord.ref == scope.ref
    elif scope.kind == "user":
        condition &= TriggerRecord.run_as_user_id == scope.user_id
    try:
        trigger.delete(condition=condition)
    except DeleteError as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True


@dataclass(frozen=True)
class PageCounts:
    deleted: int
    invocations_cancelled: int
    executions_stopped: int


def commit_page(record: CascadeRecord, counts: PageCounts, *, next_pass: bool = False) -> bool:
    """Count the planned page's work and clear its plan; `next_pass` also starts a pass from the top."""
    actions: list[Any] = [
        CascadeRecord.deleted.add(counts.deleted),
        CascadeRecord.invocations_cancelled.add(counts.invocations_cancelled),
        CascadeRecord.executions_stopped.add(counts.executions_stopped),
        CascadeRecord.plan.remove(),
        CascadeRecord.plan_incarnations.remove(),
        CascadeRecord.plan_is_last.remove(),
        CascadeRecord.page_number.add(1),
    ]
    if next_pass:
        actions += [
            CascadeRecord.pass_number.add(1),
            CascadeRecord.deleted_before_pass.set(int(record.deleted) + counts.deleted),
            CascadeRecord.cursor.remove(),
        ]
    if condition_held(lambda: record.update(actions=actions, condition=_same_page(record))):
        return True
    record.refresh(consistent_read=True)
    return False


def complete(record: CascadeRecord, now: datetime) -> None:
    """Lift the scope's tombstone (unless a later cascade of the scope holds it), then mark the cascade done.

    In this order, so a crash between the two leaves a cascade that completes again when re-run,
    never a tombstone that refuses creates for good.
    """
    tombstone = ScopeTombstoneRecord(tombstone_pk(scope_of(record).key))
    lift: list[Any] = [ScopeTombstoneRecord.state.set(COMPLETED)]
    condition_held(
        lambda: tombstone.update(actions=lift, condition=ScopeTombstoneRecord.cascade_id == record.cascade_id)
    )
    done: list[Any] = [
        CascadeRecord.state.set(COMPLETED),
        CascadeRecord.completed_at.set(now),
        CascadeRecord.page_number.add(1),
    ]
    if not condition_held(lambda: record.update(actions=done, condition=_same_page(record))):
        record.refresh(consistent_read=True)

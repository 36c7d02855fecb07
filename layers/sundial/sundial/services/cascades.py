"""Cascades (SPEC §7): delete every trigger of a scope, cancel their unfinished invocations and stop
their executions, at any size, one page at a time (statemachine/cascade.asl.json).

Accepting a cascade writes its record, then its scope's tombstone, then starts its execution. From
the tombstone on, no run of a trigger that was in the scope before it starts (`covering_tombstone`,
the runner's check), and no trigger is created in or enabled into the scope while the cascade runs
(`refuse_while_running`). Each page plans its triggers, cancels and deletes them, and commits its
counts; the index is read again after a pause, because DynamoDB's indexes lag (docs/decisions.md).
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass

from pydantic import Field

from sundial.adapters.aws_retry import Backoff
from sundial.contracts.api import Cascade, CascadeAccepted
from sundial.contracts.execution import StateModel
from sundial.deps import Deps
from sundial.domain.auth import Principal
from sundial.domain.cascade import (
    CascadeScope,
    ScopeKind,
    cascade_id_for,
    entered_scope_at,
    event_origin,
    request_origin,
    trigger_scope_keys,
)
from sundial.domain.errors import ConflictError, NotFoundError
from sundial.services import cancellation
from sundial.store import cascades as cascade_store
from sundial.store import triggers as trigger_store
from sundial.store.cascades import COMPLETED, RUNNING, PageCounts
from sundial.store.records import CascadeRecord, ScopeTombstoneRecord, TriggerRecord, invocation_partition

logger = logging.getLogger(__name__)

# After the last page of a pass, the index is read once more from the top this long after: a
# trigger written just before the tombstone may not have been in the (eventually consistent) index.
SETTLE_SECONDS = 60
# A page is not begun with less time than this left in the Lambda invocation.
PAGE_TIME_MARGIN_SECONDS = 60.0


class CascadeStep(StateModel):
    """The Page Task's input and output: which cascade, and whether the state machine waits or is done."""

    tenant_id: str
    cascade_id: str
    done: bool = False
    wait_seconds: int = Field(0, ge=0)

    def to_event(self) -> dict[str, object]:
        return self.model_dump(mode="json", by_alias=True)


def fresh_cascade_id() -> str:
    return "csc_" + secrets.token_hex(12)


def to_api(record: CascadeRecord) -> Cascade:
    return Cascade(
        cascade_id=record.cascade_id,
        tenant_id=record.tenant_id,
        scope=record.scope_kind,
        project_id=record.project_id,
        agent_id=record.agent_id,
        ref=record.ref,
        user_id=record.user_id,
        state=record.state,
        accepted_at=record.accepted_at,
        completed_at=record.completed_at,
        found=int(record.found),
        deleted=int(record.deleted),
        invocations_cancelled=int(record.invocations_cancelled),
        executions_stopped=int(record.executions_stopped),
    )


def accept(deps: Deps, scope: CascadeScope, cascade_id: str, origin: str) -> CascadeRecord:
    """Accept a cascade, or find the one with this id: a repeat starts nothing new.

    A repeat of one still running puts up its tombstone and starts its execution again (both
    idempotent), so an acceptance that broke off between its writes is finished by the repeat.
    """
    record = cascade_store.find(scope.tenant_id, cascade_id)
    if record is None:
        fresh = cascade_store.new_record(scope, cascade_id, origin, deps.now())
        record = fresh if cascade_store.create(fresh) else cascade_store.find(scope.tenant_id, cascade_id)
        assert record is not None, "a cascade record is never deleted"
    if cascade_store.scope_of(record) != scope:
        raise ConflictError(f"Cascade '{cascade_id}' was accepted for another scope")
    if record.state == RUNNING:
        cascade_store.raise_tombstone(record)
        _start_execution(deps, record)
    return record


def _start_execution(deps: Deps, record: CascadeRecord) -> None:
    """The cascade's execution is named after it, so starting it again finds the one running."""
    sfn = deps.sfn
    step = CascadeStep(tenant_id=record.tenant_id, cascade_id=record.cascade_id)
    with suppress(sfn.exceptions.ExecutionAlreadyExists):
        Backoff().call(
            lambda: sfn.start_execution(
                stateMachineArn=deps.settings.cascade_state_machine_arn,
                name=record.cascade_id,
                input=json.dumps(step.to_event(), separators=(",", ":")),
            )
        )


def request(deps: Deps, principal: Principal, scope: CascadeScope, idempotency_key: str | None) -> CascadeAccepted:
    """The admin routes' cascade (SPEC §3): 202 with its id; the same Idempotency-Key finds the same one."""
    principal.require_tenant(scope.tenant_id, "admin")
    cascade_id = cascade_id_for(scope.tenant_id, request_origin(scope, idempotency_key)) if idempotency_key else None
    record = accept(deps, scope, cascade_id or fresh_cascade_id(), "api")
    return CascadeAccepted(cascade_id=record.cascade_id)


def on_platform_event(deps: Deps, scope: CascadeScope, event_id: str) -> CascadeAccepted:
    """A platform event's cascade (SPEC §7): the bus is the platform's, so its word is the authority;
    the cascade id comes from the event's id, so a repeated event finds the first cascade."""
    record = accept(deps, scope, cascade_id_for(scope.tenant_id, event_origin(event_id)), "event")
    return CascadeAccepted(cascade_id=record.cascade_id)


def progress(principal: Principal, tenant_id: str, cascade_id: str) -> Cascade:
    principal.require_tenant(tenant_id, "admin")
    record = cascade_store.find(tenant_id, cascade_id)
    if record is None:
        raise NotFoundError(f"Cascade '{cascade_id}' not found")
    return to_api(record)


def _scope_keys(trigger: TriggerRecord) -> dict[ScopeKind, str]:
    return trigger_scope_keys(
        trigger.tenant_id, trigger.project_id, trigger.agent_id, trigger.ref, trigger.run_as_user_id
    )


def covering_tombstone(trigger: TriggerRecord) -> ScopeTombstoneRecord | None:
    """The tombstone of a cascade accepted after the trigger entered one of its scopes: its runs stand down.

    One strongly consistent BatchGetItem of the trigger's (at most four) scope keys.
    """
    for tombstone in cascade_store.tombstones(_scope_keys(trigger).values()):
        kind: ScopeKind = tombstone.scope_kind  # type: ignore[assignment]
        entered = entered_scope_at(kind, trigger.created_at, trigger.ref_since, trigger.run_as_since)
        if entered <= tombstone.accepted_at:
            return tombstone
    return None


def stand_down_reason(tombstone: ScopeTombstoneRecord) -> str:
    return f"cancelled by cascade {tombstone.cascade_id}: the trigger's {tombstone.scope_kind} was deleted"


def refuse_while_running(scope_keys: Iterable[str]) -> None:
    """409 when a cascade of any of these scopes is still deleting triggers (create, enable, move)."""
    for tombstone in cascade_store.tombstones(scope_keys):
        if tombstone.state == RUNNING:
            raise ConflictError(
                f"Cascade '{tombstone.cascade_id}' is deleting the triggers of this {tombstone.scope_kind}; "
                "try again once it has completed"
            )


def refuse_for(trigger: TriggerRecord) -> None:
    refuse_while_running(_scope_keys(trigger).values())


def _in_scope(scope: CascadeScope, trigger: TriggerRecord) -> bool:
    return scope.matches(trigger.tenant_id, trigger.project_id, trigger.agent_id, trigger.ref, trigger.run_as_user_id)


def _plan(record: CascadeRecord, scope: CascadeScope, page_size: int) -> dict[str, TriggerRecord] | None:
    """Read the next index page and remember its triggers that still exist in the scope; returns them
    as read (None when another run of the page moved on first)."""
    index_page = cascade_store.scope_page(scope, record.cursor, page_size)
    present = cascade_store.read_triggers(index_page.trigger_pks) if index_page.trigger_pks else {}
    planned = [present[pk] for pk in index_page.trigger_pks if pk in present and _in_scope(scope, present[pk])]
    if not cascade_store.plan_page(record, planned, index_page.next_cursor):
        return None
    return {str(trigger.pk): trigger for trigger in planned}


def _work(
    deps: Deps, record: CascadeRecord, scope: CascadeScope, just_read: dict[str, TriggerRecord] | None
) -> PageCounts:
    """Cancel and delete the planned triggers. A plan picked up again after a crash is read again,
    and a planned trigger gone by then was deleted by this page before."""
    planned: dict[str, str] = {
        str(pk): str(incarnation)
        for pk, incarnation in zip(record.plan or [], record.plan_incarnations or [], strict=True)
    }
    deleted = 0
    present = just_read
    if present is None:
        present = cascade_store.read_triggers(list(planned)) if planned else {}
        deleted = sum(1 for pk in planned if pk not in present)
    ours = [t for pk, t in present.items() if pk in planned and t.incarnation == planned[pk] and _in_scope(scope, t)]
    with_open_runs = cascade_store.open_partitions(ours) if ours else set()
    reason = f"cancelled by cascade {record.cascade_id}: {scope.describe()} was deleted"
    cancelled = stopped = 0
    for trigger in ours:
        if invocation_partition(trigger.tenant_id, trigger.trigger_id, trigger.incarnation) in with_open_runs:
            done = cancellation.cancel_all_open(deps, trigger, reason)
            cancelled += done.invocations
            stopped += done.executions_stopped
        deleted += int(cascade_store.delete_trigger(trigger, scope))
    return PageCounts(deleted, cancelled, stopped)


def page(deps: Deps, step: CascadeStep, time_left: Callable[[], float], page_size: int | None = None) -> CascadeStep:
    """Work pages of the cascade while time is left; then say whether to go on, wait, or stop.

    Safe to run again at any point: a page's plan and its commit are conditional on the page number,
    and a re-run works its own plan again, counting the triggers it had deleted already.
    """
    record = cascade_store.find(step.tenant_id, step.cascade_id)
    if record is None:
        raise NotFoundError(f"Cascade '{step.cascade_id}' not found")
    scope = cascade_store.scope_of(record)
    size = page_size or deps.settings.cascade_page_size
    just_read: dict[str, TriggerRecord] | None = None
    while record.state != COMPLETED:
        if record.plan is None:
            just_read = _plan(record, scope, size)
            continue
        counts = _work(deps, record, scope, just_read)
        just_read = None
        if not record.plan_is_last:
            if cascade_store.commit_page(record, counts) and time_left() < PAGE_TIME_MARGIN_SECONDS:
                return step.model_copy(update={"done": False, "wait_seconds": 0})
            continue
        deleted_in_pass = int(record.deleted) + counts.deleted - int(record.deleted_before_pass)
        if int(record.pass_number) >= 2 and deleted_in_pass == 0:
            if cascade_store.commit_page(record, counts):
                cascade_store.complete(record, deps.now())
            continue
        if cascade_store.commit_page(record, counts, next_pass=True):
            passed = int(record.pass_number) - 1
            logger.info("cascade %s: pass %s done, reading again in %s s", record.cascade_id, passed, SETTLE_SECONDS)
            return step.model_copy(update={"done": False, "wait_seconds": SETTLE_SECONDS})
    # Completed: its tombstone was lifted before the record was marked (store.cascades.complete).
    return step.model_copy(update={"done": True, "wait_seconds": 0})


@dataclass(frozen=True)
class RunAsIndexReport:
    found: int  # triggers with a runAs user that the by_run_as index did not have
    indexed: int  # of them, given their key now (0 in a dry run)
    changed_meanwhile: int  # edited or deleted between the scan and the write: the edit indexed them


def index_run_as_users(*, write: bool, progress: Callable[[int], None] = lambda _: None) -> RunAsIndexReport:
    """Give triggers stored before the `by_run_as` index existed their key, so that a cascade by user
    finds them (`make migrate ARGS="run-as-index --apply"`). Safe to run again, and beside the API."""
    found = indexed = changed = 0
    for trigger in trigger_store.without_run_as_key():
        found += 1
        if write:
            if trigger_store.add_run_as_key(trigger):
                indexed += 1
            else:
                changed += 1
        progress(found)
    return RunAsIndexReport(found, indexed, changed)

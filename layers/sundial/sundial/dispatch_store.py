"""The dispatcher's view of the triggers table: due-index pages and its three conditional writes.

`DispatchStore` is the port the dispatcher talks to; `DynamoDispatchStore` is the real one
(pynamodb). Keeping the port this narrow lets the benchmark plug in a model of DynamoDB with
latency and quotas while the dispatcher's own code runs unchanged. Every write is conditional
on attributes that only a live trigger item has, so no write ever recreates a deleted trigger.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from pynamodb.constants import NONE

from sundial.storage import TriggerRecord, condition_held, format_instant

QUERY_PAGE_SIZE = 1000
Cursor = dict[str, Any]


@dataclass(frozen=True)
class Claim:
    """An occurrence claimed for dispatch: which one, the execution name, and the schedule version."""

    occurrence: datetime
    name: str
    version: int


@dataclass(frozen=True)
class DueRow:
    """What the due index projects for a trigger: enough to plan, claim and start without reading the item.

    Read from a GSI, so possibly stale: every decision made from it is re-checked by a conditional write.
    """

    pk: str
    tenant_id: str
    project_id: str
    agent_id: str
    trigger_id: str
    incarnation: str
    cron_expression: str | None
    cron_timezone: str
    run_at: datetime | None
    catch_up_window_seconds: int
    schedule_version: int
    next_run_at: datetime | None
    due_at: str | None
    claim: Claim | None


@dataclass(frozen=True)
class Advance:
    """Write 1: move `next_run_at` past the observed occurrence, with a leased claim or without one.

    `finished` marks a one-time trigger whose only occurrence was skipped: it is disabled, as a
    one-time trigger is once its run is over.
    """

    next_run_at: datetime | None
    skipped: int
    claim: Claim | None = None
    lease_until: datetime | None = None
    finished: bool = False


class DispatchStore(Protocol):
    def due_page(self, shard: int, until: str, cursor: Cursor | None) -> tuple[list[DueRow], Cursor | None]:
        """One page of a shard's due rows with `due_at <= until`, in `due_at` order, and the next cursor."""
        ...

    def advance(self, row: DueRow, step: Advance) -> bool:
        """Write 1, if `next_run_at` and `schedule_version` are still as read and no claim is outstanding."""
        ...

    def renew_lease(self, row: DueRow, lease_until: datetime) -> bool:
        """Take over an expired claim, if it is still the one read, with the lease `due_at` read."""
        ...

    def release(self, row: DueRow, claim: Claim, next_run_at: datetime | None) -> bool:
        """Write 2: drop `claim` if it is still outstanding; the row goes back to its next run or leaves the index."""
        ...


def due_row(record: TriggerRecord) -> DueRow:
    """The dispatcher's view of a trigger record, whether read from the due index or the table."""
    claim = None
    if record.claim_name is not None and record.claim_for is not None and record.claim_version is not None:
        claim = Claim(record.claim_for, record.claim_name, int(record.claim_version))
    return DueRow(
        pk=record.pk,
        tenant_id=record.tenant_id,
        project_id=record.project_id,
        agent_id=record.agent_id,
        trigger_id=record.trigger_id,
        incarnation=record.incarnation,
        cron_expression=record.cron_expression,
        cron_timezone=record.cron_timezone,
        run_at=record.run_at,
        catch_up_window_seconds=int(record.catch_up_window_seconds),
        schedule_version=int(record.schedule_version),
        next_run_at=record.next_run_at,
        due_at=record.due_at,
        claim=claim,
    )


def _next_run_actions(next_run_at: datetime | None) -> list[Any]:
    """Back in the index at the next run, or out of it (keys removed) when there is none."""
    if next_run_at is None:
        return [TriggerRecord.due_at.remove(), TriggerRecord.due_shard.remove()]
    return [TriggerRecord.due_at.set(format_instant(next_run_at))]


class DynamoDispatchStore:
    """The due index and the trigger items in DynamoDB. Writes return nothing (`ReturnValues: NONE`)."""

    def due_page(self, shard: int, until: str, cursor: Cursor | None) -> tuple[list[DueRow], Cursor | None]:
        results = TriggerRecord.due.query(
            shard,
            TriggerRecord.due_at <= until,
            limit=QUERY_PAGE_SIZE,
            last_evaluated_key=cursor,
        )
        rows = [due_row(record) for record in results]
        return rows, results.last_evaluated_key

    def advance(self, row: DueRow, step: Advance) -> bool:
        condition = (
            (TriggerRecord.next_run_at == row.next_run_at)
            & (TriggerRecord.schedule_version == row.schedule_version)
            & TriggerRecord.claim_name.does_not_exist()
        )
        actions: list[Any] = [
            TriggerRecord.next_run_at.set(step.next_run_at)
            if step.next_run_at is not None
            else TriggerRecord.next_run_at.remove()
        ]
        if step.skipped:
            actions.append(TriggerRecord.missed_runs_skipped.add(step.skipped))
        if step.claim is not None:
            assert step.lease_until is not None
            actions += [
                TriggerRecord.claim_for.set(step.claim.occurrence),
                TriggerRecord.claim_name.set(step.claim.name),
                TriggerRecord.claim_version.set(step.claim.version),
                TriggerRecord.due_at.set(format_instant(step.lease_until)),
            ]
        else:
            actions += _next_run_actions(step.next_run_at)
        if step.finished:
            actions += [TriggerRecord.enabled.set(False), TriggerRecord.schedule_version.add(1)]
        return self._update(row.pk, actions, condition)

    def renew_lease(self, row: DueRow, lease_until: datetime) -> bool:
        assert row.claim is not None
        assert row.due_at is not None
        condition = (TriggerRecord.claim_name == row.claim.name) & (TriggerRecord.due_at == row.due_at)
        return self._update(row.pk, [TriggerRecord.due_at.set(format_instant(lease_until))], condition)

    def release(self, row: DueRow, claim: Claim, next_run_at: datetime | None) -> bool:
        actions: list[Any] = [
            TriggerRecord.claim_for.remove(),
            TriggerRecord.claim_name.remove(),
            TriggerRecord.claim_version.remove(),
            *_next_run_actions(next_run_at),
        ]
        return self._update(row.pk, actions, TriggerRecord.claim_name == claim.name)

    @staticmethod
    def _update(pk: str, actions: list[Any], condition: Any) -> bool:
        """One conditional UpdateItem; False when the condition did not hold (someone else moved the item)."""
        connection = TriggerRecord._get_connection()
        return condition_held(
            lambda: connection.update_item(pk, actions=actions, condition=condition, return_values=NONE)
        )

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
from pynamodb.exceptions import DoesNotExist

from sundial.domain.instants import format_instant
from sundial.store.records import ShardMarkerRecord, TriggerRecord, condition_held
from sundial.store.triggers import ENDED, used_up_actions

QUERY_PAGE_SIZE = 1000
PageKey = dict[str, Any]  # where a shard's query continues: DynamoDB's LastEvaluatedKey


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
    due_shard: int | None = None
    interval_seconds: int | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None
    jitter_seconds: int = 0


@dataclass(frozen=True)
class ShardMarker:
    """The highest shard count whose rows may still be in the index, and since when none were seen above N."""

    shard_count: int
    empty_since: datetime | None = None


@dataclass(frozen=True)
class Advance:
    """Write 1: move `next_run_at` past the observed occurrence, with a leased claim or without one.

    `shard` is the due shard the row belongs in under the current shard count (re-shard on write).
    `finished` (the time it happened) marks a trigger whose last occurrence was skipped (a one-time
    trigger's only one, or the last before `endAt`): it is disabled, as it is once its last run is over.
    """

    next_run_at: datetime | None
    skipped: int
    shard: int
    claim: Claim | None = None
    lease_until: datetime | None = None
    finished: datetime | None = None


class DispatchStore(Protocol):
    def due_page(self, shard: int, until: str, cursor: PageKey | None) -> tuple[list[DueRow], PageKey | None]:
        """One page of a shard's due rows with `due_at <= until`, in `due_at` order, and the next cursor."""
        ...

    def advance(self, row: DueRow, step: Advance) -> bool:
        """Write 1, if `next_run_at` and `schedule_version` are still as read and no claim is outstanding."""
        ...

    def renew_lease(self, row: DueRow, lease_until: datetime) -> bool:
        """Take over an expired claim, if it is still the one read, with the lease `due_at` read."""
        ...

    def release(self, row: DueRow, claim: Claim, next_run_at: datetime | None, shard: int) -> bool:
        """Write 2: drop `claim` if it is still outstanding; the row goes back to its next run or leaves the index."""
        ...

    def shard_marker(self) -> ShardMarker | None:
        """The highest shard count whose rows may still be in the index (strongly consistent)."""
        ...

    def note_empty(self, observed: int, since: datetime | None) -> bool:
        """Record (or, with None, forget) since when the shards above the count were found empty."""
        ...

    def raise_marker(self, shard_count: int) -> None:
        """Record `shard_count` as in use unless a higher one already is."""
        ...

    def lower_marker(self, observed: int, shard_count: int) -> bool:
        """Replace the marker `observed` by `shard_count` once no row is left in the shards above it."""
        ...

    def shard_page(self, shard: int, cursor: PageKey | None) -> tuple[list[DueRow], PageKey | None]:
        """One page of every row in a shard, whatever its `due_at` (to re-shard it)."""
        ...

    def move_shard(self, row: DueRow, shard: int) -> bool:
        """Move a row that is still in the shard it was read from to `shard`."""
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
        due_shard=int(record.due_shard) if record.due_shard is not None else None,
        interval_seconds=int(record.interval_seconds) if record.interval_seconds is not None else None,
        start_at=record.start_at,
        end_at=record.end_at,
        jitter_seconds=int(record.jitter_seconds or 0),
    )


def _next_run_actions(next_run_at: datetime | None, shard: int) -> list[Any]:
    """Back in the index at the next run (in its current shard), or out of it when there is none."""
    if next_run_at is None:
        return [TriggerRecord.due_at.remove(), TriggerRecord.due_shard.remove()]
    return [TriggerRecord.due_at.set(format_instant(next_run_at)), TriggerRecord.due_shard.set(shard)]


def _same_trigger(row: DueRow) -> Any:
    """The item is still the incarnation that was read: a re-created trigger under the same id is not."""
    return TriggerRecord.incarnation == row.incarnation


class DynamoDispatchStore:
    """The due index and the trigger items in DynamoDB. Writes return nothing (`ReturnValues: NONE`)."""

    def due_page(self, shard: int, until: str, cursor: PageKey | None) -> tuple[list[DueRow], PageKey | None]:
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
            _same_trigger(row)
            & (TriggerRecord.next_run_at == row.next_run_at)
            & (TriggerRecord.schedule_version == row.schedule_version)
            & TriggerRecord.claim_name.does_not_exist()
        )
        actions: list[Any] = [TriggerRecord.missed_runs_skipped.add(step.skipped)] if step.skipped else []
        if step.finished is not None:
            return self._update(row.pk, [*actions, *used_up_actions(step.finished, ENDED)], condition)
        actions.append(
            TriggerRecord.next_run_at.set(step.next_run_at)
            if step.next_run_at is not None
            else TriggerRecord.next_run_at.remove()
        )
        if step.claim is not None:
            assert step.lease_until is not None
            actions += [
                TriggerRecord.claim_for.set(step.claim.occurrence),
                TriggerRecord.claim_name.set(step.claim.name),
                TriggerRecord.claim_version.set(step.claim.version),
                TriggerRecord.dispatched_for.set(step.claim.occurrence),
                TriggerRecord.due_at.set(format_instant(step.lease_until)),
                TriggerRecord.due_shard.set(step.shard),
            ]
        else:
            actions += _next_run_actions(step.next_run_at, step.shard)
        return self._update(row.pk, actions, condition)

    def renew_lease(self, row: DueRow, lease_until: datetime) -> bool:
        assert row.claim is not None
        assert row.due_at is not None
        condition = (
            _same_trigger(row) & (TriggerRecord.claim_name == row.claim.name) & (TriggerRecord.due_at == row.due_at)
        )
        return self._update(row.pk, [TriggerRecord.due_at.set(format_instant(lease_until))], condition)

    def release(self, row: DueRow, claim: Claim, next_run_at: datetime | None, shard: int) -> bool:
        actions: list[Any] = [
            TriggerRecord.claim_for.remove(),
            TriggerRecord.claim_name.remove(),
            TriggerRecord.claim_version.remove(),
            *_next_run_actions(next_run_at, shard),
        ]
        return self._update(row.pk, actions, _same_trigger(row) & (TriggerRecord.claim_name == claim.name))

    def shard_marker(self) -> ShardMarker | None:
        try:
            record = ShardMarkerRecord.get(ShardMarkerRecord.pk.default, consistent_read=True)
        except DoesNotExist:
            return None
        return ShardMarker(int(record.shard_count), record.empty_since)

    def note_empty(self, observed: int, since: datetime | None) -> bool:
        marker = ShardMarkerRecord(shard_count=observed, empty_since=since)
        return condition_held(lambda: marker.save(condition=ShardMarkerRecord.shard_count == observed))

    def raise_marker(self, shard_count: int) -> None:
        marker = ShardMarkerRecord(shard_count=shard_count)
        lower = ShardMarkerRecord.shard_count.does_not_exist() | (ShardMarkerRecord.shard_count < shard_count)
        condition_held(lambda: marker.save(condition=lower))

    def lower_marker(self, observed: int, shard_count: int) -> bool:
        marker = ShardMarkerRecord(shard_count=shard_count)
        return condition_held(lambda: marker.save(condition=ShardMarkerRecord.shard_count == observed))

    def shard_page(self, shard: int, cursor: PageKey | None) -> tuple[list[DueRow], PageKey | None]:
        results = TriggerRecord.due.query(shard, limit=QUERY_PAGE_SIZE, last_evaluated_key=cursor)
        return [due_row(record) for record in results], results.last_evaluated_key

    def move_shard(self, row: DueRow, shard: int) -> bool:
        condition = _same_trigger(row) & (TriggerRecord.due_shard == row.due_shard)
        return self._update(row.pk, [TriggerRecord.due_shard.set(shard)], condition)

    @staticmethod
    def _update(pk: str, actions: list[Any], condition: Any) -> bool:
        """One conditional UpdateItem; False when the condition did not hold (someone else moved the item)."""
        connection = TriggerRecord._get_connection()
        return condition_held(
            lambda: connection.update_item(pk, actions=actions, condition=condition, return_values=NONE)
        )

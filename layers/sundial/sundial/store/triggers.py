"""Trigger records: reads, the conditional writes that keep their schedule state whole, and listings.

Services change a record's attributes in memory and hand it here with the names they changed; every
write is one conditional DynamoDB request, so a concurrent edit, delete or re-creation is noticed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from pynamodb.exceptions import DoesNotExist

from sundial.contracts.api import AgentPath
from sundial.domain.errors import NotFoundError
from sundial.domain.instants import format_instant
from sundial.store.records import TriggerRecord, condition_held, run_as_key, trigger_pk

# Final statuses that are a run's outcome (lastOutcome*), as opposed to skipped or cancelled.
OUTCOMES = frozenset({"completed", "failed"})
# The attributes that together say when a trigger runs next and which occurrence is claimed.
SCHEDULE_STATE = (
    "schedule_version",
    "next_run_at",
    "due_shard",
    "due_at",
    "claim_for",
    "claim_name",
    "claim_version",
    "dispatched_for",
)


def find(tenant_id: str, trigger_id: str) -> TriggerRecord | None:
    """The trigger by a strongly consistent read, or None."""
    try:
        return TriggerRecord.get(trigger_pk(tenant_id, trigger_id), consistent_read=True)
    except DoesNotExist:
        return None


def load(path: AgentPath, trigger_id: str) -> TriggerRecord:
    """The trigger at this path; one under another project or agent is reported as not found."""
    record = find(path.tenant_id, trigger_id)
    if record is None or (record.project_id, record.agent_id) != (path.project_id, path.agent_id):
        raise NotFoundError(f"Trigger '{trigger_id}' not found")
    return record


def create(record: TriggerRecord) -> bool:
    """Write a new trigger; False when its id is already taken in the tenant."""
    return condition_held(lambda: record.save(condition=TriggerRecord.pk.does_not_exist()))


def _set_or_remove(record: TriggerRecord, name: str) -> Any:
    """The update action that stores the record's value of `name`, removing the attribute for None."""
    attribute = getattr(TriggerRecord, name)
    value = getattr(record, name)
    return attribute.set(value) if value is not None else attribute.remove()


def save_changes(record: TriggerRecord, names: Iterable[str], expected_revision: int) -> bool:
    """Write the named attributes as `record` holds them, if nobody changed the trigger since `expected_revision`."""
    actions = [_set_or_remove(record, name) for name in dict.fromkeys(names)]
    return condition_held(lambda: record.update(actions=actions, condition=TriggerRecord.revision == expected_revision))


def delete(record: TriggerRecord) -> None:
    record.delete()


def project_page(partition: str, agent_id: str | None, limit: int, start: dict[str, str] | None) -> list[TriggerRecord]:
    """Up to `limit` triggers of a project (or of one agent in it) after `start`, by agent then id."""
    condition = TriggerRecord.agent_trigger.startswith(f"{agent_id}#") if agent_id is not None else None
    return list(
        TriggerRecord.by_project.query(
            partition,
            range_key_condition=condition,
            limit=limit,
            last_evaluated_key={name: {"S": value} for name, value in start.items()} if start else None,
        )
    )


def agent_triggers(partition: str, agent_id: str) -> Iterator[TriggerRecord]:
    """Every trigger of one agent in a project."""
    return TriggerRecord.by_project.query(
        partition, range_key_condition=TriggerRecord.agent_trigger.startswith(f"{agent_id}#")
    )


# Why a trigger's schedule is over (`finished_reason`): its last occurrence has ended (a one-time
# trigger's run, or the last before endAt), or it has started its maxRuns scheduled runs.
ENDED = "ended"
# How many ended schedule versions a trigger remembers the end of (SPEC §5, edits after a claim).
REMEMBERED_VERSION_ENDS = 16
# Rounds of read-and-pause when an edit lands at the same moment.
MAX_PAUSE_TRIES = 4
MAX_RUNS = "max_runs"


def used_up_actions(now: datetime, reason: str | None = None) -> list[Any]:
    """Disable a trigger whose schedule is over (SPEC §4), saying why when `reason` is given.

    The one rule behind every write that does it: the runner's, after a last run; the dispatcher's,
    when the last occurrence was missed; the count that reaches maxRuns; and a pause (no reason).
    """
    actions = [
        TriggerRecord.enabled.set(False),
        TriggerRecord.schedule_version.add(1),
        TriggerRecord.revision.add(1),
        TriggerRecord.updated_at.set(now),
        TriggerRecord.next_run_at.remove(),
        TriggerRecord.due_shard.remove(),
        TriggerRecord.due_at.remove(),
    ]
    if reason is not None:
        actions.append(TriggerRecord.finished_reason.set(reason))
    return actions


def use_up(tenant_id: str, trigger_id: str, incarnation: str, schedule_version: int, now: datetime) -> bool:
    """The last occurrence of a trigger's schedule has ended: enabled=false and out of the due index.

    One conditional write, which leaves alone a trigger re-scheduled since the claim (every schedule
    change bumps schedule_version), a re-created one (another incarnation), and a recurring trigger
    that still has an occurrence ahead (`next_run_at`). True when it disabled the trigger.
    """
    trigger = TriggerRecord(trigger_pk(tenant_id, trigger_id))
    actions = used_up_actions(now, ENDED)
    over = (
        (TriggerRecord.incarnation == incarnation)
        & (TriggerRecord.schedule_version == schedule_version)
        & (TriggerRecord.run_at.exists() | TriggerRecord.next_run_at.does_not_exist())
    )
    return condition_held(lambda: trigger.update(actions=actions, condition=over))


def stopped_actions(now: datetime, reason: str | None = None) -> list[Any]:
    """Disable a trigger mid-schedule (a pause, or maxRuns reached): also drop any outstanding claim,
    so the dispatcher's release of it fails instead of putting the row back into the due index.
    """
    return [
        *used_up_actions(now, reason),
        TriggerRecord.claim_for.remove(),
        TriggerRecord.claim_name.remove(),
        TriggerRecord.claim_version.remove(),
        TriggerRecord.dispatched_for.remove(),
    ]


def pause(tenant_id: str, trigger_id: str, incarnation: str, reason: str, now: datetime) -> bool:
    """Disable a trigger whose scheduled run failed, with the reason (pauseOnFailure, SPEC §5).

    Like an edit of `enabled`: out of the due index and a new schedule version, whose end is
    remembered, so occurrences it had claimed and not yet started stand down, while one whose start
    had passed still runs (or is missed) as after any edit. Only while it is the same incarnation,
    enabled, and still asks to be paused; conditioned on the version read, since its end is written.
    """
    for _ in range(MAX_PAUSE_TRIES):
        current = find(tenant_id, trigger_id)
        if current is None or current.incarnation != incarnation or not current.enabled or not current.pause_on_failure:
            return False
        version = int(current.schedule_version)
        actions: list[Any] = [
            *stopped_actions(now),
            TriggerRecord.paused_reason.set(reason),
            TriggerRecord.version_ends.set(version_ends_after(current.version_ends, version, now)),
        ]
        still_asks = (
            (TriggerRecord.incarnation == incarnation)
            & (TriggerRecord.enabled == True)  # noqa: E712 - a pynamodb condition, not a comparison
            & (TriggerRecord.pause_on_failure == True)  # noqa: E712
            & (TriggerRecord.schedule_version == version)
        )
        if _update_if(TriggerRecord(trigger_pk(tenant_id, trigger_id)), actions, still_asks):
            return True
    return False


def _update_if(trigger: TriggerRecord, actions: list[Any], condition: Any) -> bool:
    return condition_held(lambda: trigger.update(actions=actions, condition=condition))


def version_ends_after(ends: dict[str, str] | None, version: int, now: datetime) -> dict[str, str]:
    """The remembered version ends once `version` ended at `now`: the latest REMEMBERED_VERSION_ENDS."""
    merged = {**(ends or {}), str(version): format_instant(now)}
    return dict(sorted(merged.items(), key=lambda item: int(item[0]))[-REMEMBERED_VERSION_ENDS:])


def record_last_run(
    tenant_id: str, trigger_id: str, incarnation: str, at: datetime, status: str, conversation_ids: list[str]
) -> bool:
    """Show a finished run on its trigger (and, if it completed or failed, as its last outcome).

    Each pair of fields moves only forward in time and only for the same incarnation. The usual
    case is one write; when only one of the pairs may move (a later run is shown in the other),
    the two are written apart.
    """
    trigger = TriggerRecord(trigger_pk(tenant_id, trigger_id))
    ids: Any = list(conversation_ids)  # pynamodb's stubs type a list of strings as a list of attributes
    run: list[Any] = [
        TriggerRecord.last_run_at.set(at),
        TriggerRecord.last_run_status.set(status),
        TriggerRecord.last_run_conversation_ids.set(ids),
    ]
    same = TriggerRecord.incarnation == incarnation
    run_is_latest = TriggerRecord.last_run_at.does_not_exist() | (TriggerRecord.last_run_at <= at)
    if status not in OUTCOMES:
        return condition_held(lambda: trigger.update(actions=run, condition=same & run_is_latest))
    outcome: list[Any] = [TriggerRecord.last_outcome_at.set(at), TriggerRecord.last_outcome_status.set(status)]
    outcome_is_latest = TriggerRecord.last_outcome_at.does_not_exist() | (TriggerRecord.last_outcome_at <= at)
    if condition_held(
        lambda: trigger.update(actions=run + outcome, condition=same & run_is_latest & outcome_is_latest)
    ):
        return True
    shown = condition_held(lambda: trigger.update(actions=run, condition=same & run_is_latest))
    condition_held(lambda: trigger.update(actions=outcome, condition=same & outcome_is_latest))
    return shown


def count_missed(tenant_id: str, trigger_id: str, incarnation: str) -> bool:
    """Add one to the incarnation's missedRunsSkipped; False when the trigger is gone or re-created."""
    trigger = TriggerRecord(trigger_pk(tenant_id, trigger_id))
    add: list[Any] = [TriggerRecord.missed_runs_skipped.add(1)]
    return condition_held(lambda: trigger.update(actions=add, condition=TriggerRecord.incarnation == incarnation))


def without_run_as_key() -> Iterator[TriggerRecord]:
    """Triggers with a runAs user but no `run_as_key`: stored before the `by_run_as` index existed,
    so a cascade by user cannot find them. A filtered scan of the table (pk and the two fields)."""
    yield from TriggerRecord.scan(
        TriggerRecord.run_as_user_id.exists() & TriggerRecord.run_as_key.does_not_exist(),
        attributes_to_get=["pk", "tenant_id", "run_as_user_id"],
    )


def add_run_as_key(trigger: TriggerRecord) -> bool:
    """Index the trigger under its runAs user; False when it changed meanwhile (an edit writes the
    key itself, and a deleted trigger needs none)."""
    key = run_as_key(trigger.tenant_id, trigger.run_as_user_id)
    assert key is not None, "only triggers with a runAs user are scanned for"
    unchanged = (
        TriggerRecord.pk.exists()
        & (TriggerRecord.run_as_user_id == trigger.run_as_user_id)
        & TriggerRecord.run_as_key.does_not_exist()
    )
    return _update_if(trigger, [TriggerRecord.run_as_key.set(key)], unchanged)

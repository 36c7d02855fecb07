"""Trigger use cases behind the HTTP API: create, read, list, edit, delete, preview.

Every write keeps the schedule state consistent in one conditional write (`sundial.store.triggers`):
`next_run_at`, the sparse due-index keys, `schedule_version` and the optimistic `revision`.
"""

from __future__ import annotations

import re
import secrets
from contextlib import suppress
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from heapq import merge
from itertools import islice

from sundial.contracts.api import (
    ID_PATTERN,
    NON_NULLABLE_PATCH_FIELDS,
    AgentPath,
    FinishedReason,
    SchedulePreview,
    SchedulePreviewRequest,
    Trigger,
    TriggerCreate,
    TriggerDetail,
    TriggerPage,
    TriggerPatch,
    UpcomingRun,
    UpcomingRuns,
)
from sundial.deps import Deps
from sundial.domain.auth import Principal
from sundial.domain.errors import (
    BadRequestError,
    ConflictError,
    FieldProblem,
    ScheduleError,
    ValidationFailedError,
)
from sundial.domain.instants import format_instant
from sundial.domain.schedule import (
    CronSchedule,
    OneTimeSchedule,
    Schedule,
    describe_limits,
    describe_stored,
    parse_run_at,
    schedule_of,
    start_of,
    stored_schedule,
    validate_timezone,
)
from sundial.services import cancellation, cascades, dispatcher
from sundial.store import triggers as trigger_store
from sundial.store.pagination import decode_cursor, encode_cursor, last_key
from sundial.store.records import (
    TriggerRecord,
    agent_trigger_key,
    due_shard_for,
    project_key,
    run_as_key,
    trigger_pk,
)

UPCOMING_RUNS_ON_DETAIL = 5
FINISHED_REASONS: dict[str, FinishedReason] = {trigger_store.ENDED: "ended", trigger_store.MAX_RUNS: "maxRunsReached"}
ID_RE = re.compile(ID_PATTERN)
SCHEDULE_FIELDS = (
    "cron_expression",
    "cron_timezone",
    "run_at",
    "interval_seconds",
    "start_at",
    "end_at",
    "jitter_seconds",
    "enabled",
)
KIND_FIELDS = ("cron_expression", "run_at", "interval_seconds")
BOUND_FIELDS = ("start_at", "end_at", "max_runs")
# How many ended schedule versions a trigger remembers the end of (see runner.superseded).
PROJECT_CURSOR_KEYS = ("pk", "project_key", "agent_trigger")


def _field_error(field_name: str, message: str) -> ValidationFailedError:
    return ValidationFailedError([FieldProblem(["body", field_name], message)])


def _schedule_kind_error() -> BadRequestError:
    message = "exactly one of cronExpression, runAt or intervalSeconds must be set"
    return BadRequestError(
        "Exactly one of cronExpression, runAt or intervalSeconds must be set",
        [{"field": f"body.{name}", "message": message} for name in ("cronExpression", "runAt", "intervalSeconds")],
    )


@dataclass(frozen=True)
class ScheduleInputs:
    """A trigger's schedule as requested: one kind (cron, runAt or interval), its zone and bounds."""

    cron_expression: str | None
    cron_timezone: str
    run_at: datetime | None
    interval_seconds: int | None = None
    start_at: datetime | None = None
    end_at: datetime | None = None


def build_schedule(inputs: ScheduleInputs) -> Schedule:
    """The schedule the fields describe; a bad expression, zone or bound is a 422 naming the field."""
    kinds = (inputs.cron_expression, inputs.run_at, inputs.interval_seconds)
    if sum(kind is not None for kind in kinds) != 1:
        raise _schedule_kind_error()
    if inputs.run_at is not None:
        for name, value in (("startAt", inputs.start_at), ("endAt", inputs.end_at)):
            if value is not None:
                raise _field_error(name, "applies only to a recurring schedule (cronExpression or intervalSeconds)")
    if inputs.start_at is not None and inputs.end_at is not None and inputs.end_at <= inputs.start_at:
        raise _field_error("endAt", "must be after startAt")
    try:
        if inputs.cron_expression is not None:
            CronSchedule.parse(inputs.cron_expression, inputs.cron_timezone)
        else:
            validate_timezone(inputs.cron_timezone)
    except ScheduleError as error:
        raise _field_error(error.field_name, error.message) from None
    return stored_schedule(
        inputs.cron_expression.strip() if inputs.cron_expression is not None else None,
        inputs.cron_timezone,
        inputs.run_at,
        inputs.interval_seconds,
        inputs.start_at,
        inputs.end_at,
    )


def interval_anchor(now: datetime) -> datetime:
    """An interval's default `startAt`: the creation instant rounded up to the minute (SPEC §4)."""
    floor = now.astimezone(UTC).replace(second=0, microsecond=0)
    return floor if floor == now else floor + timedelta(minutes=1)


def _require_an_occurrence(schedule: Schedule, now: datetime) -> None:
    """A recurring schedule whose bounds leave no occurrence after now would be finished at birth."""
    if not isinstance(schedule, OneTimeSchedule) and first_run(schedule, now, new_run_at=False) is None:
        raise _field_error("endAt", f"leaves no occurrence after now ({format_instant(now)})")


def _check_run_at(run_at: datetime, now: datetime) -> datetime:
    try:
        return parse_run_at(run_at, now)
    except ScheduleError as error:
        raise _field_error(error.field_name, error.message) from None


def _stored_instant(moment: datetime) -> datetime:
    """UTC at second precision, as storage keeps it: the same instant written another way compares equal."""
    return moment.astimezone(UTC).replace(microsecond=0)


def first_unstarted(schedule: Schedule, incarnation: str, jitter_seconds: int, now: datetime) -> datetime | None:
    """`nextRunAt` of a recurring trigger enabled or re-scheduled at `now`: the first occurrence
    whose start (instant plus jitter) is still ahead, so an edit during an occurrence's jitter keeps
    it (its earlier claim stands down, see runner.superseded). A new trigger starts strictly after now."""
    if jitter_seconds <= 0 or isinstance(schedule, OneTimeSchedule):
        return first_run(schedule, now, new_run_at=False)
    with suppress(OverflowError):
        for nominal in schedule.occurrences_after(now - timedelta(seconds=jitter_seconds + 1)):
            if start_of(schedule, incarnation, jitter_seconds, nominal) > now:
                return nominal
    return None


def first_run(schedule: Schedule, now: datetime, *, new_run_at: bool) -> datetime | None:
    """`nextRunAt` of a trigger created, enabled or re-scheduled at `now` (nominal, before jitter).

    A recurring schedule's first occurrence strictly after now (none past its endAt). A one-time
    trigger's own instant if it is still ahead, or if `runAt` was just set (it may be up to a minute
    past, the tolerance it is accepted with); a past instant that was already due is not scheduled
    again, so re-enabling or editing a one-time trigger whose run already started can never start it a second time.
    """
    if isinstance(schedule, OneTimeSchedule):
        return schedule.run_at if new_run_at or schedule.run_at > now else None
    with suppress(OverflowError):  # the calendar ends at 9999-12-31
        return schedule.next_after(now)
    return None


def next_unrun(record: TriggerRecord, now: datetime) -> datetime | None:
    """The next occurrence that has not run yet (SPEC §2): one claimed and still waiting counts.

    After a claim `next_run_at` already names the occurrence after it; `dispatched_for` keeps the
    claimed one until its start passes. A disabled trigger has none. Nominal instants: see
    `start_of_occurrence` for when each starts.
    """
    if not record.enabled:
        return None
    claimed = record.dispatched_for
    waiting = claimed if claimed is not None and start_of_occurrence(record, claimed) > now else None
    candidates = [at for at in (waiting, record.next_run_at) if at is not None]
    return min(candidates, default=None)


def start_of_occurrence(record: TriggerRecord, nominal: datetime) -> datetime:
    """When an occurrence of this trigger starts: its nominal instant plus the trigger's jitter."""
    return start_of(schedule_of(record), record.incarnation, int(record.jitter_seconds or 0), nominal)


def runs_remaining(record: TriggerRecord) -> int | None:
    if record.max_runs is None:
        return None
    return max(int(record.max_runs) - int(record.runs_started or 0), 0)


def describe(record: TriggerRecord) -> str:
    max_runs = int(record.max_runs) if record.max_runs is not None else None
    interval = int(record.interval_seconds) if record.interval_seconds is not None else None
    return describe_stored(
        record.cron_expression,
        record.cron_timezone,
        record.run_at,
        interval,
        record.start_at,
        record.end_at,
        max_runs,
        int(record.jitter_seconds or 0),
    )


def to_api(record: TriggerRecord, now: datetime) -> Trigger:
    return Trigger(
        id=record.trigger_id,
        tenant_id=record.tenant_id,
        project_id=record.project_id,
        agent_id=record.agent_id,
        name=record.name,
        description=record.description,
        enabled=record.enabled,
        cron_expression=record.cron_expression,
        cron_timezone=record.cron_timezone,
        run_at=record.run_at,
        interval_seconds=int(record.interval_seconds) if record.interval_seconds is not None else None,
        start_at=record.start_at,
        end_at=record.end_at,
        max_runs=int(record.max_runs) if record.max_runs is not None else None,
        runs_remaining=runs_remaining(record),
        jitter_seconds=int(record.jitter_seconds or 0),
        payload=record.payload,
        message_template=record.message_template,
        max_retries=int(record.max_retries),
        retry_delay_seconds=int(record.retry_delay_seconds),
        timeout_seconds=int(record.timeout_seconds),
        run_as_user_id=record.run_as_user_id,
        ref=record.ref,
        catch_up_window_seconds=int(record.catch_up_window_seconds),
        overlap_policy=record.overlap_policy,
        pause_on_failure=bool(record.pause_on_failure),
        paused_reason=record.paused_reason,
        finished_reason=FINISHED_REASONS.get(record.finished_reason) if record.finished_reason else None,
        created_by=record.created_by,
        created_at=record.created_at,
        updated_at=record.updated_at,
        next_run_at=_started(record, next_unrun(record, now)),
        last_run_at=record.last_run_at,
        last_run_status=record.last_run_status,
        last_run_conversation_ids=list(record.last_run_conversation_ids or []),
        last_outcome_at=record.last_outcome_at,
        last_outcome_status=record.last_outcome_status,
        missed_runs_skipped=int(record.missed_runs_skipped or 0),
        schedule_description=describe(record),
    )


def _started(record: TriggerRecord, nominal: datetime | None) -> datetime | None:
    return start_of_occurrence(record, nominal) if nominal is not None else None


def _due_fields(deps: Deps, record: TriggerRecord, next_run_at: datetime | None) -> None:
    """Set next_run_at and the sparse due-index keys together (absent when nothing is scheduled)."""
    record.next_run_at = next_run_at
    if next_run_at is None:
        record.due_shard = None
        record.due_at = None
    else:
        dispatcher.announce_shard_count(deps)
        record.due_shard = due_shard_for(record.tenant_id, record.trigger_id, deps.settings.due_shard_count)
        record.due_at = format_instant(next_run_at)


def _first(
    schedule: Schedule, incarnation: str, jitter_seconds: int, now: datetime, *, new_run_at: bool
) -> datetime | None:
    if isinstance(schedule, OneTimeSchedule):
        return first_run(schedule, now, new_run_at=new_run_at)
    return first_unstarted(schedule, incarnation, jitter_seconds, now)


def _recurring_only(inputs: ScheduleInputs, max_runs: int | None) -> None:
    if inputs.run_at is not None and max_runs is not None:
        raise _field_error("maxRuns", "applies only to a recurring schedule (cronExpression or intervalSeconds)")


def create_trigger(deps: Deps, principal: Principal, path: AgentPath, body: TriggerCreate) -> Trigger:
    principal.require_tenant(path.tenant_id, "editor")
    principal.check_run_as(body.run_as_user_id)
    if sum(kind is not None for kind in (body.cron_expression, body.run_at, body.interval_seconds)) != 1:
        raise _schedule_kind_error()
    now = deps.now()
    run_at = _check_run_at(body.run_at, now) if body.run_at is not None else None
    start_at = _stored_instant(body.start_at) if body.start_at is not None else None
    if body.interval_seconds is not None and start_at is None:
        start_at = interval_anchor(now)
    inputs = ScheduleInputs(
        body.cron_expression,
        body.cron_timezone,
        run_at,
        body.interval_seconds,
        start_at,
        _stored_instant(body.end_at) if body.end_at is not None else None,
    )
    schedule = build_schedule(inputs)
    _recurring_only(inputs, body.max_runs)
    _require_an_occurrence(schedule, now)
    trigger_id = body.id or f"trg_{secrets.token_hex(10)}"
    record = TriggerRecord(
        trigger_pk(path.tenant_id, trigger_id),
        project_key=project_key(path.tenant_id, path.project_id),
        agent_trigger=agent_trigger_key(path.agent_id, trigger_id),
        tenant_id=path.tenant_id,
        project_id=path.project_id,
        agent_id=path.agent_id,
        trigger_id=trigger_id,
        incarnation=secrets.token_hex(8),
        name=body.name,
        description=body.description,
        enabled=body.enabled,
        cron_expression=body.cron_expression,
        cron_timezone=body.cron_timezone,
        run_at=run_at,
        interval_seconds=body.interval_seconds,
        start_at=inputs.start_at,
        end_at=inputs.end_at,
        max_runs=body.max_runs,
        jitter_seconds=body.jitter_seconds or None,
        payload=body.payload,
        message_template=body.message_template,
        max_retries=body.max_retries,
        retry_delay_seconds=body.retry_delay_seconds,
        timeout_seconds=body.timeout_seconds,
        run_as_user_id=body.run_as_user_id,
        run_as_key=run_as_key(path.tenant_id, body.run_as_user_id),
        ref=body.ref,
        catch_up_window_seconds=body.catch_up_window_seconds,
        overlap_policy=body.overlap_policy,
        pause_on_failure=body.pause_on_failure,
        created_by=principal.subject,
        created_at=now,
        updated_at=now,
        revision=1,
        schedule_version=1,
        missed_runs_skipped=0,
    )
    next_run_at = first_run(schedule, now, new_run_at=True) if body.enabled else None
    _due_fields(deps, record, next_run_at)
    # Read after `now`: a cascade accepted after this read is accepted after createdAt, so it stands
    # the trigger's runs down and its last pass deletes it (docs/decisions.md, "Cascades").
    cascades.refuse_for(record)
    if not trigger_store.create(record):
        raise ConflictError(f"Trigger id '{trigger_id}' is already taken in this tenant")
    dispatcher.claim_if_due_soon(deps, record)
    return to_api(record, now)


def _merged_kind(record: TriggerRecord, patch: TriggerPatch) -> dict[str, object]:
    """cronExpression, runAt and intervalSeconds after the patch: setting one clears the others."""
    fields = patch.model_fields_set
    values: dict[str, object] = {name: getattr(record, name) for name in KIND_FIELDS}
    named = [name for name in KIND_FIELDS if name in fields]
    chosen = [name for name in named if getattr(patch, name) is not None]
    if len(chosen) > 1:
        raise _schedule_kind_error()
    if chosen:
        values = {name: getattr(patch, name) if name == chosen[0] else None for name in KIND_FIELDS}
    for name in named:
        if name not in chosen:
            values[name] = None
    if sum(value is not None for value in values.values()) != 1:
        raise _schedule_kind_error()
    return values


def _merged_inputs(record: TriggerRecord, patch: TriggerPatch, now: datetime) -> tuple[ScheduleInputs, int | None]:
    """The schedule and maxRuns after the patch. Switching to runAt drops the bounds the patch does not
    name; switching to an interval anchors it at the bound startAt, or the next minute."""
    fields = patch.model_fields_set
    kind = _merged_kind(record, patch)
    cron = kind["cron_expression"]
    run_at = kind["run_at"]
    interval = kind["interval_seconds"]
    bounds: dict[str, object] = {
        name: getattr(patch, name) if name in fields else getattr(record, name) for name in BOUND_FIELDS
    }
    if run_at is not None and record.run_at is None:
        bounds = {name: getattr(patch, name) if name in fields else None for name in BOUND_FIELDS}
    elif interval is None and record.interval_seconds is not None and "start_at" not in fields:
        bounds["start_at"] = None  # the interval's anchor is no bound of the schedule that replaces it
    start_at = bounds["start_at"]
    end_at = bounds["end_at"]
    if isinstance(start_at, datetime):
        start_at = _stored_instant(start_at)
    if isinstance(end_at, datetime):
        end_at = _stored_instant(end_at)
    if interval is not None and start_at is None:
        start_at = interval_anchor(now)
    timezone = patch.cron_timezone if patch.cron_timezone is not None else record.cron_timezone
    inputs = ScheduleInputs(
        cron if isinstance(cron, str) else None,
        timezone,
        _stored_instant(run_at) if isinstance(run_at, datetime) else None,
        int(interval) if interval is not None else None,  # type: ignore[call-overload]
        start_at if isinstance(start_at, datetime) else None,
        end_at if isinstance(end_at, datetime) else None,
    )
    max_runs = bounds["max_runs"]
    return inputs, int(max_runs) if max_runs is not None else None  # type: ignore[call-overload]


def _stored_inputs(record: TriggerRecord) -> ScheduleInputs:
    return ScheduleInputs(
        record.cron_expression,
        record.cron_timezone,
        record.run_at,
        int(record.interval_seconds) if record.interval_seconds is not None else None,
        record.start_at,
        record.end_at,
    )


def _set_max_runs(record: TriggerRecord, max_runs: int | None) -> list[str]:
    """Set maxRuns in memory; counting starts from zero when it is set on a trigger without one."""
    names = ["max_runs"]
    if max_runs is not None and record.max_runs is None:
        record.runs_started = 0
        names.append("runs_started")
    record.max_runs = max_runs
    return names


def _check_runs_left(record: TriggerRecord, max_runs: int | None, *, enabling: bool, max_runs_named: bool) -> None:
    """maxRuns may not fall to the runs already started; a trigger out of runs is enabled only with more.

    Runs are counted only while maxRuns is set: setting it on a trigger without one counts from zero.
    """
    started = int(record.runs_started or 0) if record.max_runs is not None else 0
    if max_runs is None or max_runs > started:
        return
    if max_runs_named:
        raise _field_error("maxRuns", f"must be more than the {started} scheduled runs already started")
    if enabling:
        raise _field_error("enabled", f"all {max_runs} runs (maxRuns) have started; raise maxRuns to run it again")


def _reschedule(
    deps: Deps,
    record: TriggerRecord,
    inputs: ScheduleInputs,
    jitter: int,
    enabled: bool,
    now: datetime,
    first: datetime | None,
) -> list[str]:
    """Apply a schedule change in memory: a new schedule version, the old one's end, no claim; the
    names written."""
    record.cron_expression, record.cron_timezone, record.run_at = (
        inputs.cron_expression,
        inputs.cron_timezone,
        inputs.run_at,
    )
    record.interval_seconds, record.start_at, record.end_at = inputs.interval_seconds, inputs.start_at, inputs.end_at
    record.jitter_seconds, record.enabled = jitter or None, enabled
    record.version_ends = trigger_store.version_ends_after(record.version_ends, int(record.schedule_version), now)
    record.schedule_version = int(record.schedule_version) + 1
    record.claim_for = record.claim_name = record.claim_version = record.dispatched_for = None
    _due_fields(deps, record, first if enabled else None)
    return ["version_ends", *SCHEDULE_FIELDS, *trigger_store.SCHEDULE_STATE]


def _enter_scopes(
    record: TriggerRecord, patch: TriggerPatch, plain_fields: set[str], now: datetime, *, enabling: bool
) -> list[str]:
    """A new branch or runAs user: since when the trigger is in that scope (a cascade's tombstone of
    the scope from before then is not about it). Refused while a cascade of a scope the trigger would
    run in is deleting triggers; the names written."""
    moved = [
        name
        for name in ("ref", "run_as_user_id")
        if name in plain_fields and getattr(patch, name) != getattr(record, name)
    ]
    for name in moved:
        setattr(record, name, getattr(patch, name))
    names: list[str] = []
    if "ref" in moved:
        record.ref_since = now
        names.append("ref_since")
    if "run_as_user_id" in moved:
        record.run_as_since = now
        record.run_as_key = run_as_key(record.tenant_id, record.run_as_user_id)
        names += ["run_as_since", "run_as_key"]
    if enabling or moved:
        cascades.refuse_for(record)
    return names


def update_trigger(deps: Deps, principal: Principal, path: AgentPath, trigger_id: str, patch: TriggerPatch) -> Trigger:
    principal.require_tenant(path.tenant_id, "editor")
    fields = patch.model_fields_set
    if not fields:
        raise BadRequestError(
            "The request body names no field to change", [{"field": "body", "message": "names no field"}]
        )
    nulls = sorted(name for name in fields & NON_NULLABLE_PATCH_FIELDS if getattr(patch, name) is None)
    if nulls:
        raise ValidationFailedError(
            [FieldProblem(["body", TriggerPatch.model_fields[name].alias or name], "may not be null") for name in nulls]
        )
    record = trigger_store.load(path, trigger_id)
    principal.require_can_change(record.created_by, record.run_as_user_id)
    if "run_as_user_id" in fields:
        principal.check_run_as(patch.run_as_user_id)
    now = deps.now()
    inputs, max_runs = _merged_inputs(record, patch, now)
    jitter = patch.jitter_seconds if patch.jitter_seconds is not None else int(record.jitter_seconds or 0)
    enabled = patch.enabled if patch.enabled is not None else record.enabled
    enabling = enabled and not record.enabled
    stored = _stored_inputs(record)
    new_run_at = inputs.run_at is not None and inputs.run_at != record.run_at
    # A one-time trigger's zone only labels its runs; it moves no occurrence.
    zone_matters = inputs.run_at is None or record.run_at is None
    schedule_changed = (
        (inputs.cron_expression, inputs.run_at, inputs.interval_seconds, inputs.start_at, inputs.end_at)
        != (stored.cron_expression, stored.run_at, stored.interval_seconds, stored.start_at, stored.end_at)
        or jitter != int(record.jitter_seconds or 0)
        or enabled != record.enabled
        or (zone_matters and inputs.cron_timezone != record.cron_timezone)
    )
    run_at = inputs.run_at
    if new_run_at and enabled and run_at is not None:
        run_at = _check_run_at(run_at, now)
    elif schedule_changed and enabled and inputs.run_at is not None and inputs.run_at <= now:
        raise _field_error("runAt", "has passed; set a new runAt to run this one-time trigger again")
    schedule = build_schedule(inputs)
    _recurring_only(inputs, max_runs)
    _check_runs_left(record, max_runs, enabling=enabling, max_runs_named="max_runs" in fields)
    if enabled and (enabling or fields & {*KIND_FIELDS, "start_at", "end_at", "cron_timezone"}):
        _require_an_occurrence(schedule, now)

    expected_revision = int(record.revision)
    plain_fields = fields - set(SCHEDULE_FIELDS) - set(BOUND_FIELDS)
    if not schedule_changed and inputs.cron_timezone != record.cron_timezone:
        plain_fields.add("cron_timezone")
    entered = _enter_scopes(record, patch, plain_fields, now, enabling=enabling)
    for name in plain_fields:
        setattr(record, name, getattr(patch, name))
    changed = [*sorted(plain_fields), *_set_max_runs(record, max_runs), "updated_at", "revision", *entered]
    record.updated_at = now
    record.revision = expected_revision + 1
    if enabling:
        # Enabling a paused or finished trigger is how it is resumed (SPEC §4, §5).
        record.paused_reason = record.finished_reason = None
        changed += ["paused_reason", "finished_reason"]
    if schedule_changed:
        inputs = replace(inputs, run_at=run_at)
        first = _first(schedule, record.incarnation, jitter, now, new_run_at=new_run_at)
        changed += _reschedule(deps, record, inputs, jitter, enabled, now, first)
    if not trigger_store.save_changes(record, changed, expected_revision):
        raise ConflictError(f"Trigger '{trigger_id}' was changed or deleted concurrently; read it again and retry")
    if schedule_changed:
        dispatcher.claim_if_due_soon(deps, record)
    return to_api(record, now)


def delete_trigger(deps: Deps, principal: Principal, path: AgentPath, trigger_id: str) -> None:
    """Cancel the trigger's unfinished invocations, then delete it (a run claimed meanwhile stands down)."""
    principal.require_tenant(path.tenant_id, "editor")
    record = trigger_store.load(path, trigger_id)
    principal.require_can_change(record.created_by, record.run_as_user_id)
    cancellation.cancel_all_open(deps, record, "trigger deleted")
    trigger_store.delete(record)


def _upcoming_nominal(record: TriggerRecord, count: int, now: datetime) -> list[datetime]:
    """The next `count` occurrences that have not run (nominal instants), within maxRuns' remaining runs."""
    first = next_unrun(record, now)
    remaining = runs_remaining(record)
    if remaining is not None:
        count = min(count, remaining)
    if first is None or count < 1:
        return []
    return [first, *schedule_of(record).next_runs(first, count - 1)]


def upcoming_runs_of(record: TriggerRecord, count: int, now: datetime) -> list[datetime]:
    """When the next `count` occurrences start (jitter included)."""
    return [start_of_occurrence(record, at) for at in _upcoming_nominal(record, count, now)]


def get_trigger(deps: Deps, principal: Principal, path: AgentPath, trigger_id: str) -> TriggerDetail:
    principal.require_tenant(path.tenant_id)
    record = trigger_store.load(path, trigger_id)
    now = deps.now()
    upcoming = upcoming_runs_of(record, UPCOMING_RUNS_ON_DETAIL, now)
    return TriggerDetail(**to_api(record, now).model_dump(), upcoming_runs=upcoming)


def _continues_listing(start: dict[str, str], tenant_id: str, agent_id: str | None) -> bool:
    """A cursor's key must be one this listing could have produced: a trigger of this tenant (and agent)."""
    agent, _, trigger_id = start["agent_trigger"].partition("#")
    return (
        ID_RE.fullmatch(agent) is not None
        and ID_RE.fullmatch(trigger_id) is not None
        and (agent_id is None or agent == agent_id)
        and start["pk"] == trigger_pk(tenant_id, trigger_id)
    )


def list_triggers(
    deps: Deps,
    principal: Principal,
    tenant_id: str,
    project_id: str,
    agent_id: str | None,
    limit: int,
    cursor: str | None,
) -> TriggerPage:
    """A project's triggers (or one agent's), ordered by agent then id, `limit` per page."""
    principal.require_tenant(tenant_id)
    partition = project_key(tenant_id, project_id)
    start = decode_cursor(cursor, {"pk": None, "project_key": partition, "agent_trigger": None})
    if start is not None and not _continues_listing(start, tenant_id, agent_id):
        raise BadRequestError("Invalid cursor", [{"field": "cursor", "message": "does not belong to this listing"}])
    rows = trigger_store.project_page(partition, agent_id, limit + 1, start)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = encode_cursor(last_key(page[-1], PROJECT_CURSOR_KEYS)) if more else None
    now = deps.now()
    return TriggerPage(data=[to_api(row, now) for row in page], next_cursor=next_cursor)


def agent_upcoming_runs(deps: Deps, principal: Principal, path: AgentPath, limit: int) -> UpcomingRuns:
    """The agent's next occurrences across its enabled triggers, soonest first."""
    principal.require_tenant(path.tenant_id)
    now = deps.now()
    records = trigger_store.agent_triggers(project_key(path.tenant_id, path.project_id), path.agent_id)
    streams = [
        [
            UpcomingRun(
                trigger_id=record.trigger_id,
                trigger_name=record.name,
                scheduled_for=nominal,
                starts_at=start_of_occurrence(record, nominal),
            )
            for nominal in _upcoming_nominal(record, limit, now)
        ]
        for record in records
    ]
    soonest = merge(*streams, key=lambda run: (run.starts_at, run.trigger_id))
    return UpcomingRuns(data=list(islice(soonest, limit)))


def preview_schedule(deps: Deps, request: SchedulePreviewRequest) -> SchedulePreview:
    """Nominal occurrences of a schedule that need not be stored (a stored trigger's `upcomingRuns`
    add its jitter, which depends on its incarnation); a runAt in the past simply has none.
    """
    inputs = ScheduleInputs(
        request.cron_expression,
        request.cron_timezone,
        request.run_at,
        request.interval_seconds,
        request.start_at,
        request.end_at,
    )
    if request.interval_seconds is not None and request.start_at is None:
        inputs = replace(inputs, start_at=interval_anchor(deps.now()))
    schedule = build_schedule(inputs)
    _recurring_only(inputs, request.max_runs)
    after = request.after if request.after is not None else deps.now()
    count = min(request.count, request.max_runs) if request.max_runs is not None else request.count
    runs: list[datetime] = []
    with suppress(OverflowError):  # the calendar ends at 9999-12-31: no more occurrences to show
        for occurrence in islice(schedule.occurrences_after(after), count):
            runs.append(occurrence)
    description = schedule.describe() + describe_limits(request.max_runs, request.jitter_seconds)
    return SchedulePreview(next_runs=runs, schedule_description=description)

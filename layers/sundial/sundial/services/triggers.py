"""Trigger use cases behind the HTTP API: create, read, list, edit, delete, preview.

Every write keeps the schedule state consistent in one conditional write (`sundial.store.triggers`):
`next_run_at`, the sparse due-index keys, `schedule_version` and the optimistic `revision`.
"""

from __future__ import annotations

import re
import secrets
from contextlib import suppress
from datetime import UTC, datetime
from heapq import merge
from itertools import islice

from sundial.contracts.api import (
    ID_PATTERN,
    NON_NULLABLE_PATCH_FIELDS,
    AgentPath,
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
    parse_run_at,
    schedule_of,
    validate_timezone,
)
from sundial.services import cancellation, dispatcher
from sundial.store import triggers as trigger_store
from sundial.store.pagination import decode_cursor, encode_cursor, last_key
from sundial.store.records import (
    TriggerRecord,
    agent_trigger_key,
    due_shard_for,
    project_key,
    trigger_pk,
)

UPCOMING_RUNS_ON_DETAIL = 5
ID_RE = re.compile(ID_PATTERN)
SCHEDULE_FIELDS = ("cron_expression", "cron_timezone", "run_at", "enabled")
# How many ended schedule versions a trigger remembers the end of (see runner.superseded).
REMEMBERED_VERSION_ENDS = 16
PROJECT_CURSOR_KEYS = ("pk", "project_key", "agent_trigger")


def _field_error(field_name: str, message: str) -> ValidationFailedError:
    return ValidationFailedError([FieldProblem(["body", field_name], message)])


def _schedule_kind_error() -> BadRequestError:
    message = "exactly one of cronExpression or runAt must be set"
    return BadRequestError(
        "Exactly one of cronExpression or runAt must be set",
        [{"field": f"body.{name}", "message": message} for name in ("cronExpression", "runAt")],
    )


def build_schedule(cron_expression: str | None, cron_timezone: str, run_at: datetime | None) -> Schedule:
    """The schedule a trigger's fields describe; a bad expression or zone is a 422 naming the field."""
    try:
        if cron_expression is not None:
            return CronSchedule.parse(cron_expression, cron_timezone)
        if run_at is None:
            raise _schedule_kind_error()
        validate_timezone(cron_timezone)
        return OneTimeSchedule(run_at)
    except ScheduleError as error:
        raise _field_error(error.field_name, error.message) from None


def _check_run_at(run_at: datetime, now: datetime) -> datetime:
    try:
        return parse_run_at(run_at, now)
    except ScheduleError as error:
        raise _field_error(error.field_name, error.message) from None


def _stored_instant(moment: datetime) -> datetime:
    """UTC at second precision, as storage keeps it: the same instant written another way compares equal."""
    return moment.astimezone(UTC).replace(microsecond=0)


def first_run(schedule: Schedule, now: datetime, *, new_run_at: bool) -> datetime | None:
    """`nextRunAt` of a trigger created, enabled or re-scheduled at `now`.

    A cron schedule's first occurrence strictly after now. A one-time trigger's own instant if it is
    still ahead, or if `runAt` was just set (it may be up to a minute past, the tolerance it is
    accepted with); a past instant that was already due is not scheduled again, so re-enabling or
    editing a one-time trigger whose run already started can never start it a second time.
    """
    if isinstance(schedule, OneTimeSchedule):
        return schedule.run_at if new_run_at or schedule.run_at > now else None
    return schedule.next_after(now)


def next_unrun(record: TriggerRecord, now: datetime) -> datetime | None:
    """The next occurrence that has not run yet (SPEC §2): one claimed and still waiting counts.

    After a claim `next_run_at` already names the occurrence after it; `dispatched_for` keeps the
    claimed one until its instant passes. A disabled trigger has none.
    """
    if not record.enabled:
        return None
    waiting = record.dispatched_for if record.dispatched_for is not None and record.dispatched_for > now else None
    candidates = [at for at in (waiting, record.next_run_at) if at is not None]
    return min(candidates, default=None)


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
        created_by=record.created_by,
        created_at=record.created_at,
        updated_at=record.updated_at,
        next_run_at=next_unrun(record, now),
        last_run_at=record.last_run_at,
        last_run_status=record.last_run_status,
        last_run_conversation_ids=list(record.last_run_conversation_ids or []),
        last_outcome_at=record.last_outcome_at,
        last_outcome_status=record.last_outcome_status,
        missed_runs_skipped=int(record.missed_runs_skipped or 0),
        schedule_description=schedule_of(record).describe(),
    )


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


def create_trigger(deps: Deps, principal: Principal, path: AgentPath, body: TriggerCreate) -> Trigger:
    principal.require_tenant(path.tenant_id, "editor")
    principal.check_run_as(body.run_as_user_id)
    if (body.cron_expression is None) == (body.run_at is None):
        raise _schedule_kind_error()
    now = deps.now()
    run_at = _check_run_at(body.run_at, now) if body.run_at is not None else None
    schedule = build_schedule(body.cron_expression, body.cron_timezone, run_at)
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
        payload=body.payload,
        message_template=body.message_template,
        max_retries=body.max_retries,
        retry_delay_seconds=body.retry_delay_seconds,
        timeout_seconds=body.timeout_seconds,
        run_as_user_id=body.run_as_user_id,
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
    if not trigger_store.create(record):
        raise ConflictError(f"Trigger id '{trigger_id}' is already taken in this tenant")
    dispatcher.claim_if_due_soon(deps, record)
    return to_api(record, now)


def _merged_schedule_inputs(record: TriggerRecord, patch: TriggerPatch) -> tuple[str | None, datetime | None]:
    """cronExpression and runAt after the patch: setting one clears the other (switching the kind)."""
    fields = patch.model_fields_set
    cron: str | None = record.cron_expression
    run_at: datetime | None = record.run_at
    if "cron_expression" in fields and "run_at" in fields:
        if patch.cron_expression is not None and patch.run_at is not None:
            raise _schedule_kind_error()
        cron, run_at = patch.cron_expression, patch.run_at
    elif "cron_expression" in fields:
        cron = patch.cron_expression
        run_at = None if cron is not None else run_at
    elif "run_at" in fields:
        run_at = patch.run_at
        cron = None if run_at is not None else cron
    if (cron is None) == (run_at is None):
        raise _schedule_kind_error()
    return cron, run_at


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
    cron, run_at = _merged_schedule_inputs(record, patch)
    run_at = _stored_instant(run_at) if run_at is not None else None
    timezone = patch.cron_timezone if patch.cron_timezone is not None else record.cron_timezone
    enabled = patch.enabled if patch.enabled is not None else record.enabled
    new_run_at = run_at is not None and run_at != record.run_at
    # A one-time trigger's zone only labels its runs; it moves no occurrence.
    zone_matters = cron is not None or record.cron_expression is not None
    schedule_changed = (cron, run_at, enabled) != (record.cron_expression, record.run_at, record.enabled) or (
        zone_matters and timezone != record.cron_timezone
    )
    if new_run_at and enabled and run_at is not None:
        run_at = _check_run_at(run_at, now)
    elif schedule_changed and enabled and cron is None and run_at is not None and run_at <= now:
        raise _field_error("runAt", "has passed; set a new runAt to run this one-time trigger again")
    schedule = build_schedule(cron, timezone, run_at)

    expected_revision = int(record.revision)
    plain_fields = fields - set(SCHEDULE_FIELDS)
    if not schedule_changed and timezone != record.cron_timezone:
        plain_fields.add("cron_timezone")
    for name in plain_fields:
        setattr(record, name, getattr(patch, name))
    changed = [*sorted(plain_fields), "updated_at", "revision"]
    record.updated_at = now
    record.revision = expected_revision + 1
    if enabled and not record.enabled and record.paused_reason is not None:
        record.paused_reason = None  # enabling a paused trigger is how it is resumed (SPEC §5)
        changed.append("paused_reason")
    if schedule_changed:
        record.cron_expression, record.cron_timezone, record.run_at, record.enabled = (
            cron,
            timezone,
            run_at,
            enabled,
        )
        ended = {**(record.version_ends or {}), str(int(record.schedule_version)): format_instant(now)}
        record.version_ends = dict(sorted(ended.items(), key=lambda item: int(item[0]))[-REMEMBERED_VERSION_ENDS:])
        record.schedule_version = int(record.schedule_version) + 1
        record.claim_for = record.claim_name = record.claim_version = record.dispatched_for = None
        next_run_at = first_run(schedule, now, new_run_at=new_run_at) if enabled else None
        _due_fields(deps, record, next_run_at)
        changed += ["version_ends", *SCHEDULE_FIELDS, *trigger_store.SCHEDULE_STATE]
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


def upcoming_runs_of(record: TriggerRecord, count: int, now: datetime) -> list[datetime]:
    first = next_unrun(record, now)
    if first is None or count < 1:
        return []
    return [first, *schedule_of(record).next_runs(first, count - 1)]


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
            UpcomingRun(trigger_id=record.trigger_id, trigger_name=record.name, scheduled_for=at)
            for at in upcoming_runs_of(record, limit, now)
        ]
        for record in records
    ]
    soonest = merge(*streams, key=lambda run: (run.scheduled_for, run.trigger_id))
    return UpcomingRuns(data=list(islice(soonest, limit)))


def preview_schedule(deps: Deps, request: SchedulePreviewRequest) -> SchedulePreview:
    """Occurrences of a schedule that need not be stored; a runAt in the past simply has none."""
    if (request.cron_expression is None) == (request.run_at is None):
        raise _schedule_kind_error()
    schedule = build_schedule(request.cron_expression, request.cron_timezone, request.run_at)
    after = request.after if request.after is not None else deps.now()
    runs: list[datetime] = []
    with suppress(OverflowError):  # the calendar ends at 9999-12-31: no more occurrences to show
        for occurrence in islice(schedule.occurrences_after(after), request.count):
            runs.append(occurrence)
    return SchedulePreview(next_runs=runs, schedule_description=schedule.describe())

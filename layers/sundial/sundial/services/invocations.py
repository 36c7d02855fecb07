"""Invocation use cases behind the HTTP API: history, run-now, rerun, backfill and cancel."""

from __future__ import annotations

import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import islice, takewhile

from botocore.exceptions import BotoCoreError, ClientError

from sundial.adapters.aws_retry import Backoff
from sundial.contracts.api import (
    MAX_BACKFILL_OCCURRENCES,
    AgentPath,
    Attempt,
    BackfillAccepted,
    BackfillRequest,
    Invocation,
    InvocationKind,
    InvocationPage,
    InvocationStatus,
    RunAccepted,
)
from sundial.contracts.execution import ExecutionInput
from sundial.deps import Deps
from sundial.domain import naming
from sundial.domain.auth import Principal
from sundial.domain.errors import (
    BadRequestError,
    ConflictError,
    FieldProblem,
    ServiceUnavailableError,
    ValidationFailedError,
)
from sundial.domain.instants import compact_instant, format_instant
from sundial.domain.schedule import schedule_of
from sundial.services import cancellation, ending
from sundial.store import invocations as invocation_store
from sundial.store import triggers as trigger_store
from sundial.store.pagination import decode_cursor, encode_cursor, last_key
from sundial.store.records import InvocationRecord, TriggerRecord, invocation_partition, project_key

IDEMPOTENCY_TTL = timedelta(hours=24)
INVOCATION_CURSOR_KEYS = ("trigger_key", "invocation_id")


@dataclass(frozen=True)
class InvocationQuery:
    status: InvocationStatus | None
    from_: str | None
    to: str | None
    limit: int
    cursor: str | None


def _query_instant(value: str | None, field_name: str) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        if parsed.tzinfo is None:
            raise ValueError("naive")
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValidationFailedError(
            [FieldProblem(["query", field_name], "must be an ISO-8601 instant with Z or an offset")]
        ) from None


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
        starts_at=record.starts_at if record.starts_at is not None else record.scheduled_for,
        started_at=record.started_at,
        completed_at=record.completed_at,
        attempt_number=int(record.attempt_number),
        attempts=[Attempt.model_validate(item) for item in record.attempts or []],
        conversation_ids=list(record.conversation_ids or []),
        ref=record.ref,
        idempotency_key=record.idempotency_key,
        execution_arn=record.execution_arn,
        error=record.error,
        rerun_of=record.rerun_of,
    )


def list_invocations(principal: Principal, path: AgentPath, trigger_id: str, query: InvocationQuery) -> InvocationPage:
    """Newest first; `from`/`to` bound scheduledFor (inclusive) through the sort key, `status` filters."""
    principal.require_tenant(path.tenant_id)
    trigger = trigger_store.load(path, trigger_id)
    key = invocation_partition(path.tenant_id, trigger_id, trigger.incarnation)
    start = decode_cursor(query.cursor, {"trigger_key": key, "invocation_id": None})
    low_key, high_key = _id_bounds(query.from_, query.to)
    _require_within(start, low_key, high_key)
    rows = invocation_store.history_page(key, low_key, high_key, query.status, query.limit + 1, start)
    page, more = rows[: query.limit], len(rows) > query.limit
    next_cursor = encode_cursor(last_key(page[-1], INVOCATION_CURSOR_KEYS)) if more else None
    return InvocationPage(data=[to_api(row) for row in page], next_cursor=next_cursor)


@dataclass(frozen=True)
class ProjectInvocationQuery:
    status: InvocationStatus | None
    kind: InvocationKind | None
    trigger_id: str | None
    agent_id: str | None
    from_: str | None
    to: str | None
    limit: int
    cursor: str | None

    def matches(self, record: InvocationRecord) -> bool:
        wanted = {"status": self.status, "kind": self.kind, "trigger_id": self.trigger_id, "agent_id": self.agent_id}
        return all(value is None or getattr(record, name) == value for name, value in wanted.items())


# A page looks at no more invocations than this; with narrow filters it may come back short (follow nextCursor).
MAX_EXAMINED_PER_PAGE = 1000
PROJECT_CURSOR_KEYS = ("project_key", "invocation_id", "trigger_key")


def list_project_invocations(
    principal: Principal, tenant_id: str, project_id: str, query: ProjectInvocationQuery
) -> InvocationPage:
    """A whole project's invocations, newest first, deleted triggers' included (SPEC §3).

    `from`/`to` bound scheduledFor through the index's sort key; the other filters are applied to the
    records read back, so a page examines at most MAX_EXAMINED_PER_PAGE of them.
    """
    principal.require_tenant(tenant_id)
    partition = project_key(tenant_id, project_id)
    start = decode_cursor(query.cursor, {"project_key": partition, "invocation_id": None, "trigger_key": None})
    if start is not None and not start["trigger_key"].startswith(f"{tenant_id}#"):
        raise BadRequestError("Invalid cursor", [{"field": "cursor", "message": "does not belong to this listing"}])
    low_key, high_key = _id_bounds(query.from_, query.to)
    _require_within(start, low_key, high_key)
    found: list[InvocationRecord] = []
    last: InvocationRecord | None = None
    more = False
    history = invocation_store.project_history(partition, low_key, high_key, start, min(100, query.limit + 1))
    for examined, record in enumerate(history):
        if len(found) == query.limit or examined == MAX_EXAMINED_PER_PAGE:
            more = True
            break
        last = record
        if query.matches(record):
            found.append(record)
    next_cursor = encode_cursor(last_key(last, PROJECT_CURSOR_KEYS)) if more and last is not None else None
    return InvocationPage(data=[to_api(record) for record in found], next_cursor=next_cursor)


def _require_within(start: dict[str, str] | None, low_key: str, high_key: str) -> None:
    """A cursor continues the same `from`/`to` it came from: DynamoDB refuses a start key outside the range."""
    if start is not None and not low_key <= start["invocation_id"] <= high_key:
        raise BadRequestError(
            "Invalid cursor", [{"field": "cursor", "message": "belongs to a listing with other from/to bounds"}]
        )


def _id_bounds(from_: str | None, to: str | None) -> tuple[str, str]:
    """The invocation-id range that holds scheduledFor in [from, to] (ids start with the compact instant)."""
    lower, upper = _query_instant(from_, "from"), _query_instant(to, "to")
    if lower is not None and upper is not None and lower > upper:
        raise ValidationFailedError([FieldProblem(["query", "from"], "must not be later than 'to'")])
    return (compact_instant(lower) if lower else "0"), (f"{compact_instant(upper)}~" if upper else "~")


def get_invocation(principal: Principal, path: AgentPath, trigger_id: str, invocation_id: str) -> Invocation:
    principal.require_tenant(path.tenant_id)
    trigger = trigger_store.load(path, trigger_id)
    return to_api(invocation_store.load(path.tenant_id, trigger_id, trigger.incarnation, invocation_id))


def cancel_invocation(
    deps: Deps, principal: Principal, path: AgentPath, trigger_id: str, invocation_id: str
) -> Invocation:
    principal.require_tenant(path.tenant_id, "editor")
    trigger = trigger_store.load(path, trigger_id)
    record = invocation_store.load(path.tenant_id, trigger_id, trigger.incarnation, invocation_id)
    return to_api(cancellation.cancel(deps, record, "cancelled by request"))


def execution_input(record: InvocationRecord) -> ExecutionInput:
    """The runner's input for an invocation recorded before its execution started (run-now, rerun, resume)."""
    return ExecutionInput(
        tenant_id=record.tenant_id,
        project_id=record.project_id,
        agent_id=record.agent_id,
        trigger_id=record.trigger_id,
        incarnation=record.incarnation,
        invocation_id=record.invocation_id,
        kind=record.kind,
        scheduled_for=format_instant(record.scheduled_for),
        schedule_version=int(record.schedule_version) if record.schedule_version is not None else None,
        idempotency_key=record.idempotency_key,
        starts_at=format_instant(record.starts_at) if record.starts_at is not None else None,
    )


def _start_manual(
    deps: Deps,
    trigger: TriggerRecord,
    kind: InvocationKind,
    invocation_id: str,
    idempotency_key: str,
    rerun_of: str | None = None,
) -> RunAccepted:
    """Record a pending invocation, then start its execution; a repeat finds the same execution."""
    name = naming.manual_execution_name(kind, trigger.tenant_id, trigger.trigger_id, trigger.incarnation, invocation_id)
    record, _ = _record_once(deps, trigger, kind, invocation_id, idempotency_key, name, deps.now(), rerun_of)
    if not _start(deps, record, name):
        raise ServiceUnavailableError("The run could not be started: Step Functions did not accept it")
    assert record.execution_arn is not None
    return RunAccepted(invocation_id=invocation_id, execution_arn=record.execution_arn)


def _record_once(
    deps: Deps,
    trigger: TriggerRecord,
    kind: InvocationKind,
    invocation_id: str,
    idempotency_key: str,
    name: str,
    scheduled_for: datetime,
    rerun_of: str | None = None,
) -> tuple[InvocationRecord, bool]:
    """The invocation a request starts: created pending now (True), or the one an earlier request created."""
    record = invocation_store.new_invocation(
        deps,
        tenant_id=trigger.tenant_id,
        project_id=trigger.project_id,
        agent_id=trigger.agent_id,
        trigger_id=trigger.trigger_id,
        incarnation=trigger.incarnation,
        kind=kind,
        invocation_id=invocation_id,
        idempotency_key=idempotency_key,
        scheduled_for=scheduled_for,
        ref=trigger.ref,
        execution_name=name,
        rerun_of=rerun_of,
    )
    if invocation_store.put_if_absent(deps, record):
        return record, True
    return invocation_store.load(trigger.tenant_id, trigger.trigger_id, trigger.incarnation, invocation_id), False


def _start(deps: Deps, record: InvocationRecord, name: str) -> bool:
    """Start the record's execution (a repeat finds the same one); False, with the run failed, when refused."""
    sfn = deps.sfn
    try:
        Backoff().call(
            lambda: sfn.start_execution(
                stateMachineArn=deps.settings.state_machine_arn, name=name, input=execution_input(record).to_json()
            )
        )
    except sfn.exceptions.ExecutionAlreadyExists:
        pass
    except (ClientError, BotoCoreError):
        # Nothing will ever run it: do not leave it pending (it would count as an overlapping run). Had
        # the start gone through unanswered, the run finds its record final and stands down.
        ending.finish(deps, record, "failed", NOT_STARTED)
        return False
    return True


NOT_STARTED = "the run could not be started"


def _new_manual_id(now: datetime) -> str:
    return f"{compact_instant(now)}-{secrets.token_hex(10)}"


def run_now(
    deps: Deps, principal: Principal, path: AgentPath, trigger_id: str, idempotency_key: str | None
) -> RunAccepted:
    """Start a manual run; the same `Idempotency-Key` returns the invocation the first request made.

    It runs as the trigger's runAs user, so it needs the right to change the trigger (SPEC §8). Keys
    are scoped to the incarnation: a re-created trigger never answers with its predecessor's run.
    """
    principal.require_tenant(path.tenant_id, "editor")
    trigger = trigger_store.load(path, trigger_id)
    principal.require_can_change(trigger.created_by, trigger.run_as_user_id)
    now = deps.now()
    if idempotency_key is None:
        invocation_id = _new_manual_id(now)
        return _start_manual(deps, trigger, "manual", invocation_id, f"manual:{invocation_id}")
    key_hash = naming.idempotency_hash(idempotency_key)
    partition = invocation_partition(path.tenant_id, trigger_id, trigger.incarnation)
    target = invocation_store.idempotent_target(partition, key_hash, _new_manual_id(now), now + IDEMPOTENCY_TTL)
    return _start_manual(deps, trigger, "manual", target, f"manual:{key_hash}")


def rerun(deps: Deps, principal: Principal, path: AgentPath, trigger_id: str, invocation_id: str) -> RunAccepted:
    principal.require_tenant(path.tenant_id, "editor")
    trigger = trigger_store.load(path, trigger_id)
    principal.require_can_change(trigger.created_by, trigger.run_as_user_id)
    original = invocation_store.load(path.tenant_id, trigger_id, trigger.incarnation, invocation_id)
    if original.status in invocation_store.UNFINISHED:
        raise ConflictError(f"Invocation '{invocation_id}' is still {original.status}; only finished ones re-run")
    new_id = _new_manual_id(deps.now())
    return _start_manual(deps, trigger, "rerun", new_id, f"rerun:{new_id}", rerun_of=invocation_id)


def backfill(
    deps: Deps, principal: Principal, path: AgentPath, trigger_id: str, request: BackfillRequest
) -> BackfillAccepted:
    """Run every occurrence of the trigger's schedule in [from, to) now, each once (SPEC §3).

    Each occurrence's key comes from the incarnation and the instant alone, so posting the range
    again (or an overlapping one) answers the runs the first request made and starts none of them
    twice. The runs obey the overlap policy like scheduled ones; they use no maxRuns and pause nothing.
    Like run-now it acts as the trigger's runAs user, so it needs the right to change the trigger.
    """
    principal.require_tenant(path.tenant_id, "editor")
    trigger = trigger_store.load(path, trigger_id)
    principal.require_can_change(trigger.created_by, trigger.run_as_user_id)
    occurrences = _backfill_range(trigger, request, deps.now())

    def start(moment: datetime) -> tuple[str, bool]:
        name = naming.backfill_execution_name(trigger.tenant_id, trigger.trigger_id, trigger.incarnation, moment)
        invocation_id = naming.invocation_id_for(name, moment)
        record, created = _record_once(deps, trigger, "backfill", invocation_id, name, name, moment)
        if created:
            return invocation_id, _start(deps, record, name)
        if record.status == "pending":
            _start(deps, record, name)  # the request that made it may have died before starting it
        return invocation_id, False

    concurrency = deps.settings.backfill_concurrency
    if concurrency == 1:
        results = [start(moment) for moment in occurrences]
    else:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="backfill") as pool:
            results = list(pool.map(start, occurrences))
    return BackfillAccepted(
        invocation_ids=[invocation_id for invocation_id, _ in results],
        started=sum(started for _, started in results),
    )


def _backfill_range(trigger: TriggerRecord, request: BackfillRequest, now: datetime) -> list[datetime]:
    """The schedule's occurrences in [from, to): a past range, with at least one and at most the limit."""
    if request.from_ >= request.to:
        raise ValidationFailedError([FieldProblem(["body", "from"], "must be earlier than 'to'")])
    if request.to > now:
        raise ValidationFailedError([FieldProblem(["body", "to"], "must not be in the future")])
    after = request.from_ - timedelta(microseconds=1)
    in_range = takewhile(lambda moment: moment < request.to, schedule_of(trigger).occurrences_after(after))
    inside = list(islice(in_range, MAX_BACKFILL_OCCURRENCES + 1))
    if len(inside) > MAX_BACKFILL_OCCURRENCES:
        raise ValidationFailedError(
            [FieldProblem(["body", "to"], f"the range holds more than {MAX_BACKFILL_OCCURRENCES:,} occurrences")]
        )
    if not inside:
        raise ValidationFailedError([FieldProblem(["body", "from"], "the schedule has no occurrence in [from, to)")])
    return inside

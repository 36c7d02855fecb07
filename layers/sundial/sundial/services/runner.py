"""The runner's steps, one per Lambda Task of statemachine/runner.asl.json (SPEC §5).

Each step takes the execution's state and returns the whole next state; the state machine only
routes on `outcome` and waits `retryDelaySeconds`. Steps are idempotent, because Step Functions
may invoke a Task again after a transient Lambda error:

* `prepare` records the invocation as pending (scheduled runs; the API records manual ones).
* `attempt` is keyed by the state's `attemptNumber`: if that attempt is already recorded it
  replays the recorded outcome instead of calling the agent again, so a Lambda-level retry never
  spends one of the trigger's retries. Before calling the agent it notices a cancellation and,
  before the first call, a superseded claim and the overlap policy. A run that `buffer_one` makes
  wait comes back with outcome `waiting`: the state machine waits and calls Attempt again.
* `finalize` records a run whose step broke (timeout, unhandled error) as failed.
* `close_ended_execution` (the watcher, outside the state machine) closes the invocation of an
  execution that ended without any of these steps recording it: stopped, timed out, or broken
  beyond Finalize.

`completed`/`failed` never overwrite `cancelled`: every final write conditions on an unfinished status.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from datetime import datetime
from typing import Any, Literal, Protocol

from pydantic import Field, Json

from sundial.adapters.agent_http import AgentRequest, AgentResult, AttemptOutcome
from sundial.contracts.api import InvocationStatus
from sundial.contracts.execution import INSTANT_PATTERN, ExecutionInput, StateModel
from sundial.deps import Deps
from sundial.domain.errors import ConflictError, NotFoundError
from sundial.domain.instants import format_instant, parse_instant
from sundial.domain.message import render_message
from sundial.domain.missed_runs import may_start
from sundial.domain.retry_policy import (
    DEFAULT_TIMEOUT_SECONDS,
    TASK_TIMEOUT_MARGIN_SECONDS,
    longest_run,
    retry_delay_seconds,
)
from sundial.domain.schedule import schedule_of, start_of
from sundial.services import cancellation, cascades, ending
from sundial.store import invocations as invocation_store
from sundial.store import triggers as trigger_store
from sundial.store.records import InvocationRecord, TriggerRecord

logger = logging.getLogger(__name__)

SUPERSEDED = "superseded"
MISSED = "missed: its first attempt came too late for the trigger's catch-up window, or a later occurrence was due"
NO_RUNS_LEFT = "maxRuns reached: every scheduled run the trigger allows has started"
# Rounds of read-and-count when other runs of the trigger count at the same moment.
MAX_COUNT_TRIES = 8
EXECUTION_STOPPED = "execution stopped"
EXECUTION_TIMED_OUT = "the execution timed out"
MAX_ERROR_CHARS = 1000
OVERLAPPED = "another invocation of the trigger was unfinished"
ALREADY_WAITING = "another invocation of the trigger was unfinished, and another occurrence was waiting for it"
CANCELLED_BY_LATER = "cancelled by a later occurrence: overlapPolicy cancel_other"
# The kinds of run the overlap policy applies to; run-now and reruns start whatever else runs.
OVERLAP_KINDS = frozenset({"scheduled", "backfill"})
# buffer_one: how often a waiting run looks again (the delay grows from the first to the last), and
# the longest it waits: longer than any run the API allows lasts, so it never gives up on a live one.
FIRST_LOOK_SECONDS = 5
LONGEST_LOOK_SECONDS = 60
LONGEST_WAIT = longest_run()
WAITED_TOO_LONG = f"waited {LONGEST_WAIT} for the unfinished invocation of the trigger to end"

Outcome = Literal["pending", "retry", "waiting", "completed", "failed", "cancelled", "skipped"]
# What an attempt's result decides for the run.
Decision = Literal["retry", "completed", "failed"]


class PrepareEvent(StateModel):
    """The Prepare Task's payload: the execution input plus the execution's ARN from the context object."""

    input: ExecutionInput
    execution_arn: str


class RunState(ExecutionInput):
    """The state between steps. `failure` is where the state machine's Catch puts `{Error, Cause}`."""

    attempt_timeout_seconds: int = Field(DEFAULT_TIMEOUT_SECONDS + TASK_TIMEOUT_MARGIN_SECONDS, ge=1)
    attempt_number: int = Field(0, ge=0)
    outcome: Outcome = "pending"
    retry_delay_seconds: int | None = None
    failure: dict[str, Any] | None = None
    # overlapPolicy buffer_one: since when the run has waited for another to end (None: it has not).
    waiting_since: str | None = Field(None, pattern=INSTANT_PATTERN)

    def to_event(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class EndedExecution(StateModel):
    """The `detail` of the "Step Functions Execution Status Change" event of a runner execution that ended badly."""

    execution_arn: str
    status: Literal["FAILED", "TIMED_OUT", "ABORTED"]
    input: Json[ExecutionInput]
    error: str | None = None
    cause: str | None = None


class ClosedInvocation(StateModel):
    """What the watcher found: the invocation's status afterwards, and whether it was the one to close it."""

    invocation_id: str
    status: InvocationStatus
    closed: bool

    def to_event(self) -> dict[str, Any]:
        return self.model_dump(mode="json", by_alias=True)


class Agent(Protocol):
    def call(self, request: AgentRequest, timeout_seconds: float) -> AgentResult: ...


def attempt_timeout_for(trigger: TriggerRecord | None) -> int:
    timeout = int(trigger.timeout_seconds) if trigger is not None else DEFAULT_TIMEOUT_SECONDS
    return timeout + TASK_TIMEOUT_MARGIN_SECONDS


def find_invocation(run: ExecutionInput) -> InvocationRecord | None:
    try:
        return invocation_store.load(run.tenant_id, run.trigger_id, run.incarnation, run.invocation_id)
    except NotFoundError:
        return None


def _new_record(
    deps: Deps, run: ExecutionInput, trigger: TriggerRecord | None, execution_arn: str | None
) -> InvocationRecord:
    return invocation_store.new_invocation(
        deps,
        tenant_id=run.tenant_id,
        project_id=run.project_id,
        agent_id=run.agent_id,
        trigger_id=run.trigger_id,
        incarnation=run.incarnation,
        kind=run.kind,
        invocation_id=run.invocation_id,
        idempotency_key=run.idempotency_key,
        scheduled_for=parse_instant(run.scheduled_for),
        ref=trigger.ref if trigger is not None else "",
        execution_name=execution_arn.rsplit(":", 1)[-1] if execution_arn else run.idempotency_key,
        schedule_version=run.schedule_version,
        execution_arn=execution_arn,
        starts_at=parse_instant(run.starts_at) if run.starts_at is not None else None,
    )


def _ensure_invocation(
    deps: Deps, run: ExecutionInput, trigger: TriggerRecord | None, execution_arn: str | None
) -> InvocationRecord:
    """The run's invocation record, created pending if it does not exist yet (idempotent)."""
    if run.kind != "scheduled":
        existing = find_invocation(run)
        if existing is not None:
            return existing
    record = _new_record(deps, run, trigger, execution_arn)
    if invocation_store.put_if_absent(deps, record):
        return record
    return invocation_store.load(run.tenant_id, run.trigger_id, run.incarnation, run.invocation_id)


def prepare(deps: Deps, event: PrepareEvent) -> RunState:
    """Record the invocation as pending before the wait, so it can be listed and cancelled at once."""
    run = event.input
    trigger = trigger_store.find(run.tenant_id, run.trigger_id)
    _ensure_invocation(deps, run, trigger, event.execution_arn)
    return RunState(**run.model_dump(), attempt_timeout_seconds=attempt_timeout_for(trigger))


def _stopped(state: RunState, status: str) -> RunState:
    """The invocation is final: route to the end that matches its status (Done, or AgentRunFailed)."""
    outcome: Outcome = "cancelled"
    if status in ("completed", "failed", "skipped"):
        outcome = status  # type: ignore[assignment]
    return state.model_copy(update={"outcome": outcome, "retry_delay_seconds": None})


def superseded(
    kind: str, incarnation: str, schedule_version: int | None, starts_at: datetime, trigger: TriggerRecord
) -> bool:
    """Whether a run no longer belongs to its trigger and must stand down (SPEC §5, edits after a claim).

    Any run of another incarnation (the trigger was deleted and re-created) stands down. A scheduled
    occurrence stands down when its schedule version has ended (an edit of cron, zone, runAt or
    enabled) — unless its start (instant plus jitter) had already passed when the edit landed: it was due
    under the schedule it was claimed for, and the new schedule's first run is after the edit, so
    cancelling it would leave it run nowhere. Versions older than `version_ends` remembers stand down.
    """
    if trigger.incarnation != incarnation:
        return True
    if kind != "scheduled" or int(trigger.schedule_version) == schedule_version:
        return False
    ended = (trigger.version_ends or {}).get(str(schedule_version))
    return ended is None or starts_at >= parse_instant(ended)


def _superseded_record(record: InvocationRecord, trigger: TriggerRecord) -> bool:
    version = int(record.schedule_version) if record.schedule_version is not None else None
    starts_at = record.starts_at or record.scheduled_for
    return superseded(record.kind, record.incarnation, version, starts_at, trigger)


def _stand_down_superseded(deps: Deps, other: InvocationRecord) -> bool:
    """Cancel a superseded claim that has not started, as its own Attempt would; True once it is out of the way.

    Only from `pending`: a run already in progress is not stopped by an edit, so it still overlaps.
    """
    if ending.finish(deps, other, "cancelled", SUPERSEDED, only_from=("pending",)):
        return True
    invocation_store.refresh(other)
    return other.status not in invocation_store.UNFINISHED


def _overlapping(deps: Deps, record: InvocationRecord, trigger: TriggerRecord) -> list[InvocationRecord]:
    """The trigger's other invocations that are unfinished when this occurrence starts (SPEC §5, overlap).

    Read from the incarnation's register by strongly consistent reads, never from the lagging index.
    A running invocation overlaps, and so does a pending run-now or rerun (accepted, about to start).
    A pending scheduled or backfilled occurrence overlaps when it is due no later than this one —
    unless it is a claim superseded by a re-schedule, which is stood down here rather than left to its
    own Attempt (which may come after this one when both claims are for the same instant). A pending
    occurrence due later is a claim still waiting for its time and does not overlap.
    """
    found = []
    for other in invocation_store.open_invocations(record.tenant_id, record.trigger_id, record.incarnation):
        if other.invocation_id == record.invocation_id:
            continue
        started_or_manual = other.status == "running" or other.kind not in OVERLAP_KINDS
        if started_or_manual or (
            other.scheduled_for <= record.scheduled_for
            and not (_superseded_record(other, trigger) and _stand_down_superseded(deps, other))
        ):
            found.append(other)
    return found


def _apply_overlap_policy(
    deps: Deps, state: RunState, record: InvocationRecord, trigger: TriggerRecord
) -> RunState | None:
    """skip, buffer_one or cancel_other, when another invocation is unfinished; None: the run goes ahead."""
    others = _overlapping(deps, record, trigger)
    if not others:
        return None
    if trigger.overlap_policy == "cancel_other":
        for other in others:
            try:
                cancellation.cancel(deps, other, CANCELLED_BY_LATER)
            except ConflictError:
                logger.info("invocation %s ended before %s could cancel it", other.invocation_id, record.invocation_id)
        return None
    if trigger.overlap_policy != "buffer_one":
        return _finish_without_agent(deps, state, record, trigger, "skipped", OVERLAPPED)
    now = deps.now()
    since = parse_instant(state.waiting_since) if state.waiting_since is not None else now
    if now - since > LONGEST_WAIT:
        return _finish_without_agent(deps, state, record, trigger, "skipped", WAITED_TOO_LONG)
    if not invocation_store.take_waiting_place(record.trigger_key, record.invocation_id):
        return _finish_without_agent(deps, state, record, trigger, "skipped", ALREADY_WAITING)
    return _wait(state, since, now)


def _wait(state: RunState, since: datetime, now: datetime) -> RunState:
    """Wait, then look again: soon at first, then less often the longer the other run lasts."""
    waited = int((now - since).total_seconds())
    delay = min(LONGEST_LOOK_SECONDS, FIRST_LOOK_SECONDS + waited // 2)
    logger.info("run %s waits %s s for the unfinished invocation of its trigger", state.invocation_id, delay)
    return state.model_copy(
        update={"outcome": "waiting", "retry_delay_seconds": delay, "waiting_since": format_instant(since)}
    )


def _request(state: RunState, record: InvocationRecord, trigger: TriggerRecord, number: int) -> AgentRequest:
    builtins = {
        "scheduledFor": state.scheduled_for,
        "triggerName": trigger.name,
        "invocationId": state.invocation_id,
    }
    return AgentRequest(
        tenant_id=state.tenant_id,
        project_id=state.project_id,
        agent_id=state.agent_id,
        ref=record.ref,
        run_as_user_id=trigger.run_as_user_id,
        trigger_id=state.trigger_id,
        invocation_id=state.invocation_id,
        scheduled_for=state.scheduled_for,
        attempt_number=number,
        timezone=trigger.cron_timezone,
        message=render_message(trigger.message_template, trigger.payload, builtins),
        payload=trigger.payload,
    )


def _attempt_entry(number: int, started: datetime, ended: datetime, result: AgentResult) -> dict[str, Any]:
    """One `attempts` entry, camelCase like sundial.contracts.api.Attempt."""
    return {
        "number": number,
        "startedAt": format_instant(started),
        "endedAt": format_instant(ended),
        "outcome": result.outcome.value,
        "httpStatus": result.http_status,
        "error": result.error,
        "conversationId": result.conversation_id,
    }


def _decide(trigger: TriggerRecord, number: int, outcome: str) -> Decision:
    """Success ends the run; a retryable failure retries while the trigger has retries left."""
    if outcome == AttemptOutcome.SUCCEEDED:
        return "completed"
    if AttemptOutcome(outcome).retryable and number <= int(trigger.max_retries):
        return "retry"
    return "failed"


def _record_attempt(
    deps: Deps, record: InvocationRecord, entry: dict[str, Any], decision: Decision
) -> InvocationStatus:
    """Store the attempt (and, when the run is over, its final status in the same write).

    Returns the invocation's status afterwards: `cancelled` if a cancel landed during the call.
    """
    number = int(entry["number"])
    conversation_ids = [str(each) for each in record.conversation_ids or []]
    if entry["conversationId"] and entry["conversationId"] not in conversation_ids:
        conversation_ids.append(entry["conversationId"])
    earlier = list(record.attempts or [])[: number - 1]
    write = invocation_store.AttemptWrite([*earlier, entry], number, conversation_ids)
    if decision in ("completed", "failed"):
        error = entry["error"] if decision == "failed" else None
        if ending.finish(deps, record, decision, error, attempt=write):
            return decision
    elif invocation_store.save_attempt(record, write):
        return record.status  # type: ignore[return-value]
    # The run was ended meanwhile (a cancel during the call): the attempt is kept, flagged, status untouched.
    late = invocation_store.AttemptWrite([*earlier, {**entry, "afterCancel": True}], number, conversation_ids)
    invocation_store.save_attempt(record, late, while_open=False)
    return record.status  # type: ignore[return-value]


def _recorded(record: InvocationRecord, number: int) -> dict[str, Any]:
    """Attempt `number` as an earlier invocation of this step recorded it."""
    entry: dict[str, Any] = list(record.attempts or [])[number - 1]
    return entry


def _use_up(deps: Deps, state: ExecutionInput, trigger: TriggerRecord) -> None:
    """A scheduled occurrence that was its schedule's last has ended: a one-time trigger's, or the last
    before endAt (a run-now does not use anything up)."""
    if (
        state.kind == "scheduled"
        and state.schedule_version is not None
        and schedule_of(trigger).next_after(parse_instant(state.scheduled_for)) is None
    ):
        cancellation.use_up(deps, state.tenant_id, state.trigger_id, state.incarnation, state.schedule_version)


def conclude(deps: Deps, state: ExecutionInput, record: InvocationRecord, trigger: TriggerRecord | None) -> None:
    """After a run ends: the trigger's lastRun* fields, and a one-time trigger's occurrence is used up."""
    if trigger is None:
        return
    _use_up(deps, state, trigger)
    shown = trigger_store.record_last_run(
        state.tenant_id,
        state.trigger_id,
        state.incarnation,
        record.scheduled_for,
        record.status,
        [str(each) for each in record.conversation_ids or []],
    )
    if not shown:
        logger.info("lastRun of %s not updated: deleted, re-created, or a later run finished first", trigger.pk)
    if record.status == "failed" and state.kind == "scheduled" and trigger.pause_on_failure:
        when = format_instant(record.scheduled_for)
        reason = f"scheduled run {record.invocation_id} for {when} failed: {record.error}"[:MAX_ERROR_CHARS]
        if trigger_store.pause(state.tenant_id, state.trigger_id, state.incarnation, reason, deps.now()):
            logger.warning("trigger %s paused: %s", trigger.pk, reason)


def _finish_without_agent(
    deps: Deps,
    state: RunState,
    record: InvocationRecord,
    trigger: TriggerRecord | None,
    status: InvocationStatus,
    error: str,
) -> RunState:
    """Cancelled (superseded) or skipped before any agent call."""
    if ending.finish(deps, record, status, error):
        if status == "skipped":
            conclude(deps, state, record, trigger)
        if (
            error == MISSED
            and trigger is not None
            and not trigger_store.count_missed(state.tenant_id, state.trigger_id, state.incarnation)
        ):
            logger.info("missed run of %s not counted: the trigger was deleted or re-created", trigger.pk)
    else:
        invocation_store.refresh(record)
    return _stopped(state, record.status)


def _following(state: RunState, record: InvocationRecord, trigger: TriggerRecord) -> datetime | None:
    """The occurrence after this one under the schedule it was claimed for, if that one came due.

    Taken from the execution input when the dispatcher put it there (an edit may have replaced the
    schedule since), else from the trigger's schedule. Once an edit ended the claim's schedule
    version, an occurrence of it at or after that end never came due.
    """
    if state.following is not None:
        following: datetime | None = parse_instant(state.following)
    else:
        following = schedule_of(trigger).next_after(record.scheduled_for)
    if following is not None and state.schedule_version != int(trigger.schedule_version):
        ended = (trigger.version_ends or {}).get(str(state.schedule_version))
        if ended is not None and following >= parse_instant(ended):
            return None
    return following


def _may_start(deps: Deps, state: RunState, record: InvocationRecord, trigger: TriggerRecord) -> bool:
    """The missed-run rule at a run's first attempt; lateness counts from the start the run was given."""
    schedule = schedule_of(trigger)
    jitter = int(trigger.jitter_seconds or 0)
    planned = record.starts_at or record.scheduled_for

    def starts(nominal: datetime) -> datetime:
        if nominal == record.scheduled_for:
            return planned
        return start_of(schedule, trigger.incarnation, jitter, nominal)

    following = _following(state, record, trigger)
    return may_start(record.scheduled_for, following, deps.now(), int(trigger.catch_up_window_seconds), starts)


def _edited_while_waiting(deps: Deps, state: RunState, record: InvocationRecord, trigger: TriggerRecord) -> bool:
    """A run waiting for another (buffer_one) has not started: an edit of its schedule (cron, zone, runAt,
    enabled) since then supersedes it, as it would a claim still waiting for its instant."""
    if state.waiting_since is None:
        return False
    version = int(record.schedule_version) if record.schedule_version is not None else None
    return superseded(record.kind, record.incarnation, version, deps.now(), trigger)


def _stand_down(deps: Deps, state: RunState, record: InvocationRecord, trigger: TriggerRecord) -> RunState | None:
    """Before the first call: a superseded, cascaded, missed or overlapping occurrence ends here (or
    waits, with buffer_one); else it becomes running.

    The missed-run rule is checked here, when the run is about to start, because this is where every
    late path ends up: a claim re-driven long after its start failed, a wait resumed after a restart.
    """
    if _superseded_record(record, trigger) or _edited_while_waiting(deps, state, record, trigger):
        return _finish_without_agent(deps, state, record, trigger, "cancelled", SUPERSEDED)
    # A cascade accepted since the trigger entered its scope is deleting it: none of its runs starts.
    tombstone = cascades.covering_tombstone(trigger)
    if tombstone is not None:
        return _finish_without_agent(deps, state, record, trigger, "cancelled", cascades.stand_down_reason(tombstone))
    # A run that waited (buffer_one) was on time when it began to wait; it starts when the other ends.
    if state.kind == "scheduled" and state.waiting_since is None and not _may_start(deps, state, record, trigger):
        return _finish_without_agent(deps, state, record, trigger, "skipped", MISSED)
    if state.kind in OVERLAP_KINDS and trigger.overlap_policy != "allow":
        decided = _apply_overlap_policy(deps, state, record, trigger)
        if decided is not None:
            return decided
    if state.kind == "scheduled" and trigger.max_runs is not None:
        return _start_counted(deps, state, record, trigger)
    if not invocation_store.mark_running(record, trigger.ref, deps.now()):
        return _stopped(state, record.status)
    return None


def _start_counted(deps: Deps, state: RunState, record: InvocationRecord, trigger: TriggerRecord) -> RunState | None:
    """Start a scheduled run of a trigger with maxRuns: counted in the same transaction (SPEC §4).

    The run that takes the last remaining run also finishes the trigger; a run that finds none left
    (a later occurrence claimed before the count ran out) is cancelled without calling the agent.
    """
    current: TriggerRecord | None = trigger
    for _ in range(MAX_COUNT_TRIES):
        if current is None or current.incarnation != trigger.incarnation:
            return _finish_without_agent(deps, state, record, current, "cancelled", SUPERSEDED)
        if current.max_runs is None:
            return (
                None
                if invocation_store.mark_running(record, current.ref, deps.now())
                else _stopped(state, record.status)
            )
        started, limit = int(current.runs_started or 0), int(current.max_runs)
        if started >= limit:
            return _finish_without_agent(deps, state, record, current, "cancelled", NO_RUNS_LEFT)
        result = invocation_store.mark_running_counted(record, current, deps.now(), last=started + 1 >= limit)
        if result == "running":
            return None
        if result == "not_pending":
            return _stopped(state, record.status)
        current = trigger_store.find(state.tenant_id, state.trigger_id)
    raise RuntimeError(f"the run count of {trigger.pk} kept changing; the step is retried")


def _call_agent(
    deps: Deps, agent: Agent, state: RunState, record: InvocationRecord, trigger: TriggerRecord, number: int
) -> dict[str, Any]:
    """One agent call, bounded by the trigger's timeout (and the Task's); returns its `attempts` entry."""
    timeout = min(int(trigger.timeout_seconds), state.attempt_timeout_seconds - TASK_TIMEOUT_MARGIN_SECONDS)
    started = deps.now()
    result = agent.call(_request(state, record, trigger, number), timeout_seconds=max(timeout, 1))
    logger.info("attempt %s of %s: %s", number, state.invocation_id, result.outcome, extra={"http": result.http_status})
    return _attempt_entry(number, started, deps.now(), result)


def attempt(deps: Deps, agent: Agent, state: RunState, rng: Callable[[], float] = random.random) -> RunState:
    """One agent call for attempt `state.attemptNumber + 1`, recorded; the outcome routes the state machine."""
    number = state.attempt_number + 1
    record = invocation_store.load(state.tenant_id, state.trigger_id, state.incarnation, state.invocation_id)
    if record.status not in invocation_store.UNFINISHED:
        return _stopped(state, record.status)
    trigger = trigger_store.find(state.tenant_id, state.trigger_id)
    if trigger is None:
        return _finish_without_agent(deps, state, record, None, "cancelled", SUPERSEDED)
    next_state = state.model_copy(
        update={"attempt_number": number, "attempt_timeout_seconds": attempt_timeout_for(trigger)}
    )
    if int(record.attempt_number) >= number:
        entry = _recorded(record, number)
        decision = _decide(trigger, number, str(entry["outcome"]))
    else:
        if record.status == "pending":
            stood_down = _stand_down(deps, state, record, trigger)
            if stood_down is not None:
                return stood_down
        entry = _call_agent(deps, agent, state, record, trigger, number)
        decision = _decide(trigger, number, str(entry["outcome"]))
        status = _record_attempt(deps, record, entry, decision)
        if status not in invocation_store.UNFINISHED:
            if status in ("completed", "failed"):
                conclude(deps, state, record, trigger)
            return _stopped(next_state, status)
    if decision == "retry":
        delay = retry_delay_seconds(int(trigger.retry_delay_seconds), number, rng)
        return next_state.model_copy(update={"outcome": "retry", "retry_delay_seconds": delay})
    # A replayed attempt whose outcome now ends the run (the trigger's maxRetries was lowered meanwhile).
    if ending.finish(deps, record, decision, entry["error"] if decision == "failed" else None):
        conclude(deps, state, record, trigger)
    else:
        invocation_store.refresh(record)
    return _stopped(next_state, record.status)


def _failure_text(failure: dict[str, Any] | None) -> str:
    """`Error: message` from the Catch output; a Lambda error's Cause is JSON with an errorMessage."""
    failure = failure or {}
    name = str(failure.get("Error") or "States.Runtime")
    cause = str(failure.get("Cause") or "")
    try:
        parsed = json.loads(cause)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict) and "errorMessage" in parsed:
        cause = str(parsed["errorMessage"])
    text = f"{name}: {cause}" if cause else name
    return text[:MAX_ERROR_CHARS]


def finalize(deps: Deps, state: RunState) -> RunState:
    """A step broke: record the invocation as failed (creating it if Prepare never did), unless already final."""
    trigger = trigger_store.find(state.tenant_id, state.trigger_id)
    record = find_invocation(state) or _ensure_invocation(deps, state, trigger, None)
    error = _failure_text(state.failure)
    logger.warning("runner step failed for %s: %s", state.invocation_id, error)
    if ending.finish(deps, record, "failed", error):
        invocation_store.refresh(record)
        conclude(deps, state, record, trigger)
    return state.model_copy(update={"outcome": "failed"})


def _ending(ended: EndedExecution) -> tuple[InvocationStatus, str]:
    """The final status and error an execution's ending gives its invocation."""
    if ended.status == "ABORTED":
        return "cancelled", EXECUTION_STOPPED
    timed_out = ended.status == "TIMED_OUT"
    name = ended.error or ("States.Timeout" if timed_out else "States.Runtime")
    cause = ended.cause if ended.cause is not None else (EXECUTION_TIMED_OUT if timed_out else "")
    return "failed", _failure_text({"Error": name, "Cause": cause})


def close_ended_execution(deps: Deps, ended: EndedExecution) -> ClosedInvocation:
    """Close the invocation of an execution that ended outside the state machine's own paths.

    Stopped (console, StopExecution) → cancelled; failed or timed out with the invocation still
    open (Finalize broke too, or never ran) → failed, with lastRun* like any failure. Either way
    a one-time trigger's scheduled occurrence is used up. An invocation that is already final (the
    usual case: the run recorded its own end, or a cancel stopped it) is left as it is. A missing
    one is created first, so a Prepare still in flight cannot bring it back as pending.
    """
    run = ended.input
    record = find_invocation(run)
    if record is not None and record.status not in invocation_store.UNFINISHED:
        return ClosedInvocation(invocation_id=run.invocation_id, status=record.status, closed=False)
    trigger = trigger_store.find(run.tenant_id, run.trigger_id)
    record = record or _ensure_invocation(deps, run, trigger, ended.execution_arn)
    status, error = _ending(ended)
    closed = ending.finish(deps, record, status, error)
    invocation_store.refresh(record)
    if closed:
        logger.warning(
            "execution %s ended %s; invocation %s closed as %s",
            ended.execution_arn,
            ended.status,
            run.invocation_id,
            status,
        )
        if status == "failed":
            conclude(deps, run, record, trigger)
        elif trigger is not None:
            _use_up(deps, run, trigger)
    return ClosedInvocation(invocation_id=run.invocation_id, status=record.status, closed=closed)

"""The dispatcher: find due occurrences, claim each with one conditional write, start its execution.

The protocol, and why it never runs an occurrence twice nor loses one, is in docs/dispatch.md.
In short, per occurrence: (1) claim: advance `next_run_at` and record the claim with a lease,
conditioned on the `next_run_at` and `schedule_version` that were read; (2) StartExecution
named by the occurrence's idempotency key; (3) release: drop the claim. A claim whose release
never came is re-driven after its lease: the lease is taken over, then steps 2 and 3 again, same name.
"""

from __future__ import annotations

import heapq
import json
import logging
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import lru_cache, partial
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from pynamodb.exceptions import PynamoDBException

from sundial.dispatch_store import Advance, Claim, Cursor, DispatchStore, DueRow, DynamoDispatchStore, due_row
from sundial.invocations import invocation_id_for, scheduled_execution_name
from sundial.runtime import Runtime
from sundial.schedule import CronSchedule, OneTimeSchedule
from sundial.storage import TriggerRecord, format_instant

logger = logging.getLogger(__name__)

T = TypeVar("T")
THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "InternalServerError",
        "ServiceUnavailable",
    }
)
# Occurrences counted one by one when catching up; past this many, the scan jumps to the catch-up window.
MAX_MISSED_SCAN = 100_000
# An occurrence at most this late is on time and runs whatever its catch-up window: it matches the
# 60 s a runAt may lie in the past and absorbs a late tick. Older ones are missed (SPEC §4).
ON_TIME_GRACE = timedelta(seconds=60)


def error_code(error: BaseException) -> str | None:
    """The AWS error code behind a botocore or pynamodb exception."""
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code"))
    if isinstance(error, PynamoDBException):
        return error.cause_response_code
    return None


@dataclass
class Backoff:
    """Retries AWS throttling with capped exponential backoff and full jitter; `sleep` is injectable.

    Gives up after `attempts` tries, or sooner once the next pause would take the time spent
    pausing past `budget_seconds` (when set).
    """

    attempts: int = 8
    base_seconds: float = 0.05
    cap_seconds: float = 2.0
    budget_seconds: float | None = None
    sleep: Callable[[float], None] = time.sleep
    on_retry: Callable[[str], None] = lambda _code: None

    def call(self, operation: Callable[[], T]) -> T:
        paused = 0.0
        for attempt in range(self.attempts):
            try:
                return operation()
            except (ClientError, PynamoDBException) as error:
                code = error_code(error)
                if code not in THROTTLING_CODES or attempt == self.attempts - 1:
                    raise
                delay = random.uniform(0, min(self.cap_seconds, self.base_seconds * 2**attempt))
                if self.budget_seconds is not None and paused + delay > self.budget_seconds:
                    raise
                self.on_retry(code)
                self.sleep(delay)
                paused += delay
        raise AssertionError("unreachable")


# StartExecution throttling is the dispatcher's usual limit under load. A claimed occurrence keeps
# trying for up to 20 s of pauses (well inside the 60 s lease) before it is left to a redrive: with
# the regional bucket drained, 32 workers share 300 starts a second, and a worker whose pauses have
# grown to the 1 s cap wins a token less often than one that just started, so a short budget would
# strand the unlucky ones.
START_BACKOFF = Backoff(attempts=100, base_seconds=0.02, cap_seconds=1.0, budget_seconds=20.0)


@dataclass
class TickReport:
    """What one tick did, counted safely from the worker threads; the handler turns it into metrics.

    Counters: due (rows needing a claim or a redrive), dispatched, already_dispatched, claim_conflicts
    (a conditional write lost to another writer), redriven, missed_skipped, in_flight (another
    dispatcher's live claim, left alone), throttle_retries, errors.
    """

    counts: Counter[str] = field(default_factory=Counter)
    lags_seconds: list[float] = field(default_factory=list)
    stopped_early: bool = False
    duration_seconds: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, amount: int = 1) -> None:
        if amount:
            with self._lock:
                self.counts[name] += amount

    def add_lag(self, seconds: float) -> None:
        """Dispatch lag of one started execution: start time minus scheduled time (negative = ahead)."""
        with self._lock:
            self.lags_seconds.append(seconds)

    def stop_early(self) -> None:
        self.stopped_early = True

    def summary(self) -> dict[str, Any]:
        with self._lock:
            return {
                **dict(sorted(self.counts.items())),
                "stopped_early": self.stopped_early,
                "duration_seconds": round(self.duration_seconds, 3),
            }


@dataclass(frozen=True)
class Plan:
    """What to do with one due row: run `occurrence` (or nothing), move on to `next_run_at`."""

    occurrence: datetime | None
    next_run_at: datetime | None
    skipped: int


@lru_cache(maxsize=4096)
def _cron(expression: str, timezone: str) -> CronSchedule:
    return CronSchedule.parse(expression, timezone)


def schedule_of(row: DueRow) -> CronSchedule | OneTimeSchedule:
    if row.cron_expression is not None:
        return _cron(row.cron_expression, row.cron_timezone)
    assert row.run_at is not None
    return OneTimeSchedule(row.run_at)


def _occurrences_up_to(
    schedule: CronSchedule | OneTimeSchedule, observed: datetime, now: datetime, window: timedelta
) -> tuple[datetime, int, datetime | None]:
    """The latest occurrence in [observed, now], how many there are, and the first one after now.

    A backlog longer than MAX_MISSED_SCAN is counted up to there, then the scan jumps to the
    start of the window, the only place a runnable occurrence can still be (the count is then a floor).
    """
    latest, count = observed, 1
    scan = schedule.occurrences_after(observed)
    while (occurrence := next(scan, None)) is not None:
        if occurrence > now:
            return latest, count, occurrence
        latest, count = occurrence, count + 1
        if count == MAX_MISSED_SCAN and latest < now - window:
            scan = schedule.occurrences_after(now - window - timedelta(seconds=1))
    return latest, count, None


def plan(row: DueRow, now: datetime) -> Plan:
    """Pick the occurrence to run (SPEC §4, missed runs).

    Among the occurrences from `next_run_at` up to now, only the latest may run: when it is on
    time (at most ON_TIME_GRACE late) or within the trigger's catch-up window. The others are
    skipped and counted. An occurrence still ahead (claimed within the lookahead) simply runs.
    """
    assert row.next_run_at is not None
    schedule = schedule_of(row)
    observed = row.next_run_at
    if observed > now:
        return Plan(observed, schedule.next_after(observed), 0)
    window = max(timedelta(seconds=row.catch_up_window_seconds), ON_TIME_GRACE)
    latest, count, following = _occurrences_up_to(schedule, observed, now, window)
    if now - latest <= window:
        return Plan(latest, following, count - 1)
    return Plan(None, following, count)


def schedule_actions(record: TriggerRecord) -> list[Any]:
    """Update actions writing a trigger's schedule state (next run, due keys, claim) as `record` holds it."""
    names = (
        "schedule_version",
        "next_run_at",
        "due_shard",
        "due_at",
        "claim_for",
        "claim_name",
        "claim_version",
    )
    actions: list[Any] = []
    for name in names:
        value = getattr(record, name)
        attribute = getattr(TriggerRecord, name)
        actions.append(attribute.set(value) if value is not None else attribute.remove())
    return actions


@dataclass(frozen=True)
class StartRequest:
    """A StartExecution call, built before any write so that a bad row cannot leave a claim behind."""

    name: str
    input: str
    scheduled_for: datetime


def start_request(row: DueRow, claim: Claim) -> StartRequest:
    """The runner's input for a claimed occurrence; the same claim always gives the same input."""
    payload = {
        "tenantId": row.tenant_id,
        "projectId": row.project_id,
        "agentId": row.agent_id,
        "triggerId": row.trigger_id,
        "invocationId": invocation_id_for(claim.name, claim.occurrence),
        "kind": "scheduled",
        "scheduledFor": format_instant(claim.occurrence),
        "scheduleVersion": claim.version,
        "idempotencyKey": claim.name,
    }
    return StartRequest(claim.name, json.dumps(payload, separators=(",", ":")), claim.occurrence)


@dataclass
class Dispatcher:
    """Claims and starts due occurrences; one instance per process, any number of them racing."""

    runtime: Runtime
    store: DispatchStore = field(default_factory=DynamoDispatchStore)
    backoff: Backoff = field(default_factory=Backoff)
    start_backoff: Backoff = field(default_factory=lambda: replace(START_BACKOFF))

    def tick(self, remaining_seconds: Callable[[], float] = lambda: float("inf")) -> TickReport:
        """One pass over every shard, oldest due first; returns once all started work is done.

        Stops claiming when `remaining_seconds()` falls below the time margin; what is left stays
        in the index for the next tick. A claim already written is always carried through.
        """
        settings = self.runtime.settings
        report = TickReport()
        started = time.monotonic()
        horizon = self.runtime.now() + timedelta(seconds=settings.lookahead_seconds)
        _ = self.runtime.sfn  # created here: client creation is not thread-safe

        def low_on_time() -> bool:
            if remaining_seconds() < settings.dispatch_time_margin_seconds:
                report.stop_early()
                return True
            return False

        def work(row: DueRow) -> None:
            if low_on_time():
                return
            try:
                self.handle(row, horizon, report)
            except Exception:
                logger.exception("dispatch failed for trigger %s", row.pk)
                report.add("errors")

        slots = threading.BoundedSemaphore(settings.dispatch_concurrency * 2)
        with ThreadPoolExecutor(settings.dispatch_concurrency, thread_name_prefix="dispatch") as pool:
            for row in self._due_rows(format_instant(horizon), report):
                if low_on_time():
                    break
                slots.acquire()
                pool.submit(work, row).add_done_callback(lambda _done: slots.release())
        report.duration_seconds = time.monotonic() - started
        return report

    def _due_rows(self, until: str, report: TickReport) -> Iterator[DueRow]:
        """Every shard's due rows merged into one stream in `due_at` order, read a page at a time."""
        shards = [self._shard_rows(shard, until, report) for shard in range(self.runtime.settings.due_shard_count)]
        return heapq.merge(*shards, key=lambda row: row.due_at or "")

    def _shard_rows(self, shard: int, until: str, report: TickReport) -> Iterator[DueRow]:
        cursor: Cursor | None = None
        retry = self._retrying(self.backoff, report)
        while True:
            try:
                rows, cursor = retry.call(partial(self.store.due_page, shard, until, cursor))
            except Exception:
                logger.exception("reading due shard %s failed; the next tick reads it again", shard)
                report.add("errors")
                return
            yield from rows
            if cursor is None:
                return

    @staticmethod
    def _retrying(backoff: Backoff, report: TickReport) -> Backoff:
        return replace(backoff, on_retry=lambda _code: report.add("throttle_retries"))

    def handle(self, row: DueRow, horizon: datetime, report: TickReport) -> None:
        """One due row: redrive its expired claim, then claim its occurrence if that is due."""
        now = self.runtime.now()
        if row.claim is not None:
            if row.due_at is not None and row.due_at > format_instant(now):
                report.add("in_flight")
                return
            report.add("due")
            released = self.redrive(row, now, report)
            if released is None or released.next_run_at is None or released.next_run_at > horizon:
                return
            row = released
        elif row.next_run_at is None or row.next_run_at > horizon:
            return
        else:
            report.add("due")
        self.claim(row, now, report)

    def claim(self, row: DueRow, now: datetime, report: TickReport) -> None:
        """Write 1, then start and release; a failed condition means someone else moved the row first."""
        step = plan(row, now)
        write = self._retrying(self.backoff, report)
        if step.occurrence is None:
            finished = row.run_at is not None and step.next_run_at is None
            advance = Advance(step.next_run_at, step.skipped, finished=finished)
            if write.call(lambda: self.store.advance(row, advance)):
                report.add("missed_skipped", step.skipped)
            else:
                report.add("claim_conflicts")
            return
        name = scheduled_execution_name(
            row.tenant_id, row.trigger_id, row.incarnation, row.schedule_version, step.occurrence
        )
        claim = Claim(step.occurrence, name, row.schedule_version)
        request = start_request(row, claim)
        lease_until = now + timedelta(seconds=self.runtime.settings.claim_lease_seconds)
        advance = Advance(step.next_run_at, step.skipped, claim, lease_until)
        if not write.call(lambda: self.store.advance(row, advance)):
            report.add("claim_conflicts")
            return
        report.add("missed_skipped", step.skipped)
        self.start(request, report)
        self.release(row, claim, step.next_run_at, report)

    def redrive(self, row: DueRow, now: datetime, report: TickReport) -> DueRow | None:
        """Take over a claim whose lease ran out, start it (idempotently) and release it.

        Returns the row as it now stands, or None when another writer had moved it first.
        """
        claim = row.claim
        assert claim is not None
        request = start_request(row, claim)
        lease_until = now + timedelta(seconds=self.runtime.settings.claim_lease_seconds)
        if not self._retrying(self.backoff, report).call(lambda: self.store.renew_lease(row, lease_until)):
            report.add("claim_conflicts")
            return None
        report.add("redriven")
        self.start(request, report)
        if not self.release(row, claim, row.next_run_at, report):
            return None
        due_at = format_instant(row.next_run_at) if row.next_run_at is not None else None
        return replace(row, claim=None, due_at=due_at)

    def start(self, request: StartRequest, report: TickReport) -> None:
        """StartExecution named by the idempotency key; an existing execution means it was already started."""
        sfn = self.runtime.sfn
        try:
            self._retrying(self.start_backoff, report).call(
                lambda: sfn.start_execution(
                    stateMachineArn=self.runtime.settings.state_machine_arn,
                    name=request.name,
                    input=request.input,
                )
            )
        except sfn.exceptions.ExecutionAlreadyExists:
            report.add("already_dispatched")
            return
        report.add("dispatched")
        report.add_lag((self.runtime.clock() - request.scheduled_for).total_seconds())

    def release(self, row: DueRow, claim: Claim, next_run_at: datetime | None, report: TickReport) -> bool:
        """Write 2; a failed condition means an edit, a delete or a redrive already took the claim off."""
        if self._retrying(self.backoff, report).call(lambda: self.store.release(row, claim, next_run_at)):
            return True
        report.add("claim_conflicts")
        return False


# Inside an API request the claim must not use up API Gateway's 30 s; the next tick can retry instead.
API_START_BUDGET_SECONDS = 3.0


def claim_if_due_soon(runtime: Runtime, record: TriggerRecord) -> None:
    """Claim a just-created or re-scheduled trigger at once when its next run is inside the lookahead.

    Same protocol as a tick, so a racing tick cannot double it. Best effort: the trigger is already
    stored, so a failure here is logged and the next tick claims the occurrence instead.
    """
    settings = runtime.settings
    if not record.enabled or record.next_run_at is None or record.claim_name is not None:
        return
    if not settings.state_machine_arn:
        return
    now = runtime.now()
    if record.next_run_at > now + timedelta(seconds=settings.lookahead_seconds):
        return
    try:
        Dispatcher(runtime, start_backoff=replace(START_BACKOFF, budget_seconds=API_START_BUDGET_SECONDS)).claim(
            due_row(record), now, TickReport()
        )
    except Exception:
        logger.exception("immediate claim of trigger %s failed; the next tick claims it", record.pk)

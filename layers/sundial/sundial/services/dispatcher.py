"""The dispatcher: find due occurrences, claim each with one conditional write, start its execution.

The protocol, and why it never runs an occurrence twice nor loses one, is in docs/dispatch.md.
In short, per occurrence: (1) claim: advance `next_run_at` and record the claim with a lease,
conditioned on the `next_run_at` and `schedule_version` that were read; (2) StartExecution
named by the occurrence's idempotency key; (3) release: drop the claim. A claim whose release
never came is re-driven after its lease: the lease is taken over, then steps 2 and 3 again, same name.
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sundial.adapters.aws_retry import Backoff
from sundial.contracts.execution import ExecutionInput
from sundial.deps import Deps
from sundial.domain.instants import format_instant, parse_instant
from sundial.domain.lookahead import claim_now
from sundial.domain.missed_runs import catch_up_window
from sundial.domain.naming import invocation_id_for, scheduled_execution_name
from sundial.domain.schedule import Schedule, schedule_of, start_of
from sundial.store.dispatch import (
    Advance,
    Claim,
    DispatchStore,
    DueRow,
    DynamoDispatchStore,
    PageKey,
    ShardMarker,
    due_row,
)
from sundial.store.records import TriggerRecord, due_shard_for

logger = logging.getLogger(__name__)

# Occurrences counted one by one when catching up; past this many, the scan jumps to the catch-up window.
MAX_MISSED_SCAN = 100_000
# Rows re-sharded per tick after the shard count was lowered (each is one conditional UpdateItem).
MAX_RESHARD_PER_TICK = 2_000
# The shards above the count must read empty for this long before they stop being read: the due
# index is eventually consistent, and a writer still on the old count (a deploy in progress) may
# put a row there a moment before a pass reads them.
RESHARD_QUIET = timedelta(minutes=10)


# StartExecution throttling is the dispatcher's usual limit under load. A claimed occurrence keeps
# trying for up to 20 s (calls and pauses, well inside the 60 s lease) before it is left to a
# redrive: with the regional bucket drained, 32 workers share 300 starts a second, and a worker
# whose pauses have grown to the 1 s cap wins a token less often than one that just started, so a
# short budget would strand the unlucky ones.
START_BACKOFF = Backoff(attempts=100, base_seconds=0.02, cap_seconds=1.0, budget_seconds=20.0)


@dataclass
class TickReport:
    """What one tick did, counted safely from the worker threads; the handler turns it into metrics.

    Counters: due (rows needing a claim or a redrive), dispatched, already_dispatched, claim_conflicts
    (a conditional write lost to another writer), redriven, missed_skipped, in_flight (another
    dispatcher's live claim, left alone), throttle_retries, errors, claimed_ahead (claimed beyond the
    lookahead because the start quota needs it: domain.lookahead).
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


def _occurrences_up_to(
    schedule: Schedule,
    starts: Callable[[datetime], datetime],
    observed: datetime,
    now: datetime,
    window: timedelta,
    jitter: timedelta,
) -> tuple[datetime, int, datetime | None]:
    """The latest occurrence that has started by now from `observed` on, how many there are, and the
    first one after it. `starts` gives an occurrence's start (its instant plus jitter).

    A backlog longer than MAX_MISSED_SCAN is counted up to there, then the scan jumps to the
    start of the window, the only place a runnable occurrence can still be (the count is then a floor).
    """
    latest, count = observed, 1
    scan = schedule.occurrences_after(observed)
    while (occurrence := next(scan, None)) is not None:
        if starts(occurrence) > now:
            return latest, count, occurrence
        latest, count = occurrence, count + 1
        if count == MAX_MISSED_SCAN and starts(latest) < now - window:
            # An occurrence that starts inside the window is nominally up to the jitter before it.
            scan = schedule.occurrences_after(now - window - jitter - timedelta(seconds=1))
    return latest, count, None


def plan(row: DueRow, now: datetime) -> Plan:
    """Pick the occurrence to run (SPEC §4, missed runs); instants are nominal, lateness counts from starts.

    Among the occurrences from `next_run_at` that have started by now, only the latest may run: when
    it is on time (at most missed_runs.ON_TIME_GRACE late) or within the trigger's catch-up window. The
    others are skipped and counted. An occurrence still ahead (claimed within the lookahead) simply runs.
    """
    assert row.next_run_at is not None
    schedule = schedule_of(row)

    def starts(nominal: datetime) -> datetime:
        return start_of(schedule, row.incarnation, row.jitter_seconds, nominal)

    observed = row.next_run_at
    if starts(observed) > now:
        return Plan(observed, schedule.next_after(observed), 0)
    window = catch_up_window(row.catch_up_window_seconds)
    jitter = timedelta(seconds=row.jitter_seconds)
    latest, count, following = _occurrences_up_to(schedule, starts, observed, now, window, jitter)
    if now - starts(latest) <= window:
        return Plan(latest, following, count - 1)
    return Plan(None, following, count)


@dataclass(frozen=True)
class StartRequest:
    """A StartExecution call, built before any write so that a bad row cannot leave a claim behind."""

    name: str
    input: str
    scheduled_for: datetime


def start_request(row: DueRow, claim: Claim, following: datetime | None) -> StartRequest:
    """The runner's input for a claimed occurrence; the same claim always gives the same input.

    `following` is the row's `next_run_at` as the claim left it (a redrive reads the same value).
    """
    run = ExecutionInput(
        tenant_id=row.tenant_id,
        project_id=row.project_id,
        agent_id=row.agent_id,
        trigger_id=row.trigger_id,
        incarnation=row.incarnation,
        invocation_id=invocation_id_for(claim.name, claim.occurrence),
        kind="scheduled",
        scheduled_for=format_instant(claim.occurrence),
        schedule_version=claim.version,
        idempotency_key=claim.name,
        starts_at=format_instant(start_of(schedule_of(row), row.incarnation, row.jitter_seconds, claim.occurrence)),
        following=format_instant(following) if following is not None else None,
    )
    return StartRequest(claim.name, run.to_json(), claim.occurrence)


@dataclass
class Dispatcher:
    """Claims and starts due occurrences; one instance per process, any number of them racing."""

    deps: Deps
    store: DispatchStore = field(default_factory=DynamoDispatchStore)
    backoff: Backoff = field(default_factory=Backoff)
    start_backoff: Backoff = field(default_factory=lambda: replace(START_BACKOFF))

    def tick(self, remaining_seconds: Callable[[], float] = lambda: float("inf")) -> TickReport:
        """One pass over every shard, oldest due first; returns once all started work is done.

        Stops claiming when `remaining_seconds()` falls below the time margin; what is left stays
        in the index for the next tick. A claim already written is always carried through.
        """
        settings = self.deps.settings
        report = TickReport()
        started = time.monotonic()
        now = self.deps.now()
        horizon = now + timedelta(seconds=settings.lookahead_seconds)
        furthest = max(horizon, now + timedelta(seconds=settings.longest_lookahead_seconds))
        _ = self.deps.sfn  # created here: client creation is not thread-safe

        def low_on_time() -> bool:
            if remaining_seconds() < settings.dispatch_time_margin_seconds:
                report.stop_early()
                return True
            return False

        def work(row: DueRow, row_horizon: datetime) -> None:
            if low_on_time():
                return
            try:
                self.handle(row, row_horizon, report)
            except Exception:
                logger.exception("dispatch failed for trigger %s", row.pk)
                report.add("errors")

        marker = self._shard_marker(report)
        shards_in_use = max(marker.shard_count, settings.due_shard_count)
        slots = threading.BoundedSemaphore(settings.dispatch_concurrency * 2)
        with ThreadPoolExecutor(settings.dispatch_concurrency, thread_name_prefix="dispatch") as pool:
            for rank, row in enumerate(self._due_rows(format_instant(furthest), shards_in_use, report), start=1):
                if low_on_time():
                    break
                row_horizon = self._horizon_for(row, rank, now, horizon, report)
                if row_horizon is None:
                    continue
                slots.acquire()
                pool.submit(work, row, row_horizon).add_done_callback(lambda _done: slots.release())
        if shards_in_use > settings.due_shard_count and not low_on_time():
            self.reshard(marker, report)
        report.duration_seconds = time.monotonic() - started
        return report

    def _horizon_for(
        self, row: DueRow, rank: int, now: datetime, horizon: datetime, report: TickReport
    ) -> datetime | None:
        """The lookahead for this row: the base one, or its own instant when the quota needs it claimed
        now (domain.lookahead), or None: the next tick claims it in time."""
        # due_at is a lexically sortable UTC instant: the rows inside the lookahead, nearly all of them in
        # an ordinary tick, need no parsing.
        if row.due_at is None or row.due_at <= format_instant(horizon):
            return horizon
        due = parse_instant(row.due_at)
        settings = self.deps.settings
        if not claim_now(
            rank,
            due,
            now,
            timedelta(seconds=settings.lookahead_seconds),
            timedelta(seconds=settings.longest_lookahead_seconds),
            settings.start_rate_per_second,
        ):
            return None
        report.add("claimed_ahead")
        return due

    def _shard_marker(self, report: TickReport) -> ShardMarker:
        """The shard marker: how many shards to read is the configured count, or more while rows of a
        larger one may remain. A tick with a higher configured count raises it, so lowering the count
        later still finds every row.
        """
        count = self.deps.settings.due_shard_count
        retry = self._retrying(self.backoff, report)
        marker = retry.call(self.store.shard_marker)
        if marker is None or marker.shard_count < count:
            retry.call(lambda: self.store.raise_marker(count))
            return ShardMarker(count)
        return marker

    def reshard(self, marker: ShardMarker, report: TickReport) -> None:
        """Move rows out of the shards above the configured count; lower the marker once none is left.

        Claims and releases re-shard the rows they write as well, so this only has to reach the
        rows with nothing due soon. At most MAX_RESHARD_PER_TICK rows a tick; the rest next tick.
        The marker comes down only when the shards above have read empty for RESHARD_QUIET.
        """
        count = self.deps.settings.due_shard_count
        shards_in_use = marker.shard_count
        retry = self._retrying(self.backoff, report)
        found = 0
        for shard in range(count, shards_in_use):
            cursor: PageKey | None = None
            while found < MAX_RESHARD_PER_TICK:
                rows, cursor = retry.call(partial(self.store.shard_page, shard, cursor))
                for row in rows[: MAX_RESHARD_PER_TICK - found]:
                    found += 1
                    target = due_shard_for(row.tenant_id, row.trigger_id, count)
                    if retry.call(partial(self.store.move_shard, row, target)):
                        report.add("resharded")
                if cursor is None:
                    break
        now = self.deps.now()
        if found:
            if marker.empty_since is not None:
                retry.call(lambda: self.store.note_empty(shards_in_use, None))
        elif marker.empty_since is None:
            retry.call(lambda: self.store.note_empty(shards_in_use, now))
        elif now - marker.empty_since >= RESHARD_QUIET and retry.call(
            lambda: self.store.lower_marker(shards_in_use, count)
        ):
            logger.info("due index re-sharded from %s to %s shards", shards_in_use, count)

    def _target_shard(self, row: DueRow) -> int:
        return due_shard_for(row.tenant_id, row.trigger_id, self.deps.settings.due_shard_count)

    def _due_rows(self, until: str, shard_count: int, report: TickReport) -> Iterator[DueRow]:
        """Every shard's due rows merged into one stream in `due_at` order, read a page at a time."""
        shards = [self._shard_rows(shard, until, report) for shard in range(shard_count)]
        return heapq.merge(*shards, key=lambda row: row.due_at or "")

    def _shard_rows(self, shard: int, until: str, report: TickReport) -> Iterator[DueRow]:
        cursor: PageKey | None = None
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
        now = self.deps.now()
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
            finished = now if step.next_run_at is None else None
            advance = Advance(step.next_run_at, step.skipped, self._target_shard(row), finished=finished)
            if write.call(lambda: self.store.advance(row, advance)):
                report.add("missed_skipped", step.skipped)
            else:
                report.add("claim_conflicts")
            return
        name = scheduled_execution_name(
            row.tenant_id, row.trigger_id, row.incarnation, row.schedule_version, step.occurrence
        )
        claim = Claim(step.occurrence, name, row.schedule_version)
        request = start_request(row, claim, step.next_run_at)
        lease_until = now + timedelta(seconds=self.deps.settings.claim_lease_seconds)
        advance = Advance(step.next_run_at, step.skipped, self._target_shard(row), claim, lease_until)
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
        request = start_request(row, claim, row.next_run_at)
        lease_until = now + timedelta(seconds=self.deps.settings.claim_lease_seconds)
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
        sfn = self.deps.sfn
        try:
            self._retrying(self.start_backoff, report).call(
                lambda: sfn.start_execution(
                    stateMachineArn=self.deps.settings.state_machine_arn,
                    name=request.name,
                    input=request.input,
                )
            )
        except sfn.exceptions.ExecutionAlreadyExists:
            report.add("already_dispatched")
            return
        report.add("dispatched")
        report.add_lag((self.deps.clock() - request.scheduled_for).total_seconds())

    def release(self, row: DueRow, claim: Claim, next_run_at: datetime | None, report: TickReport) -> bool:
        """Write 2; a failed condition means an edit, a delete or a redrive already took the claim off."""
        shard = self._target_shard(row)
        if self._retrying(self.backoff, report).call(lambda: self.store.release(row, claim, next_run_at, shard)):
            return True
        report.add("claim_conflicts")
        return False


# How long a process trusts that the due-shard marker still covers its shard count.
SHARD_COUNT_RECHECK_SECONDS = 60.0


def announce_shard_count(deps: Deps) -> None:
    """Before a writer outside the dispatcher (the API) puts a row into the due index: make sure the
    shard marker covers the count it hashes with, so a row written under a count no dispatcher has
    used yet (a raise rolled back before the next tick) is still read once the count is lower. One
    conditional PutItem at most once a minute per process.
    """
    now = time.monotonic()
    announced = deps.shard_count_announced_at
    if announced is not None and now - announced < SHARD_COUNT_RECHECK_SECONDS:
        return
    DynamoDispatchStore().raise_marker(deps.settings.due_shard_count)
    deps.shard_count_announced_at = now


# Inside an API request the claim must not use up API Gateway's 30 s; the next tick can retry instead.
API_START_BUDGET_SECONDS = 3.0


def claim_if_due_soon(deps: Deps, record: TriggerRecord) -> None:
    """Claim a just-created or re-scheduled trigger at once when its next run is inside the lookahead.

    Same protocol as a tick, so a racing tick cannot double it. Best effort: the trigger is already
    stored, so a failure here is logged and the next tick claims the occurrence instead.
    """
    settings = deps.settings
    if not record.enabled or record.next_run_at is None or record.claim_name is not None:
        return
    if not settings.state_machine_arn:
        return
    now = deps.now()
    if record.next_run_at > now + timedelta(seconds=settings.lookahead_seconds):
        return
    try:
        Dispatcher(deps, start_backoff=replace(START_BACKOFF, budget_seconds=API_START_BUDGET_SECONDS)).claim(
            due_row(record), now, TickReport()
        )
    except Exception:
        logger.exception("immediate claim of trigger %s failed; the next tick claims it", record.pk)

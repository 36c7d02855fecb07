"""Faults: a dispatcher dying between any two steps, and throttling from DynamoDB and Step Functions.

A crash is a `Crash` (a BaseException, so nothing in the dispatcher catches it) raised at a step
boundary; from then on every call the dead dispatcher makes raises too, wherever its other workers
are. Healthy dispatchers then tick a minute apart. Moto records executions without running them
(see tests/dispatch_support.py).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
from sundial.deps import Deps
from sundial.domain.naming import scheduled_execution_name
from sundial.services.dispatcher import START_BACKOFF
from sundial.store.dispatch import Advance, Claim, DueRow, DynamoDispatchStore, PageKey, ShardMarker

from tests.conftest import START, FakeClock
from tests.dispatch_support import (
    DispatchEnv,
    SleepRecorder,
    assert_exactly_once,
    at,
    dispatch_env,
    dispatcher,
    due_rows,
    seed_many,
    stored,
    throttling,
)

T = TypeVar("T")
SCHEDULED = "2026-11-26T15:00:00Z"


class Crash(BaseException):
    """The dispatcher's process died here."""


@dataclass
class Mortal:
    """Dies at the `nth` call of `operation`, `before` or `after` its effect; dead, every call dies."""

    when: str
    operation: str
    nth: int
    calls: int = 0
    dead: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def call(self, operation: str, effect: Callable[[], T]) -> T:
        with self.lock:
            if self.dead:
                raise Crash
            if operation == self.operation:
                self.calls += 1
            dies_here = operation == self.operation and self.calls == self.nth
            if dies_here and self.when == "before":
                self.dead = True
                raise Crash
        result = effect()
        if dies_here:
            with self.lock:
                self.dead = True
            raise Crash
        return result


@dataclass
class MortalStore:
    inner: DynamoDispatchStore
    mortal: Mortal

    def due_page(self, shard: int, until: str, cursor: PageKey | None) -> tuple[list[DueRow], PageKey | None]:
        return self.mortal.call("due_page", lambda: self.inner.due_page(shard, until, cursor))

    def advance(self, row: DueRow, step: Advance) -> bool:
        return self.mortal.call("advance", lambda: self.inner.advance(row, step))

    def renew_lease(self, row: DueRow, lease_until: datetime) -> bool:
        return self.mortal.call("renew_lease", lambda: self.inner.renew_lease(row, lease_until))

    def release(self, row: DueRow, claim: Claim, next_run_at: datetime | None, shard: int) -> bool:
        return self.mortal.call("release", lambda: self.inner.release(row, claim, next_run_at, shard))

    def shard_marker(self) -> ShardMarker | None:
        return self.inner.shard_marker()

    def note_empty(self, observed: int, since: datetime | None) -> bool:
        return self.inner.note_empty(observed, since)

    def raise_marker(self, shard_count: int) -> None:
        self.inner.raise_marker(shard_count)

    def lower_marker(self, observed: int, shard_count: int) -> bool:
        return self.inner.lower_marker(observed, shard_count)

    def shard_page(self, shard: int, cursor: PageKey | None) -> tuple[list[DueRow], PageKey | None]:
        return self.inner.shard_page(shard, cursor)

    def move_shard(self, row: DueRow, shard: int) -> bool:
        return self.inner.move_shard(row, shard)


class MortalStepFunctions:
    def __init__(self, inner: Any, mortal: Mortal) -> None:
        self.inner, self.mortal, self.exceptions = inner, mortal, inner.exceptions

    def start_execution(self, **kwargs: Any) -> Any:
        return self.mortal.call("start_execution", lambda: self.inner.start_execution(**kwargs))


def tick_until_death(env: DispatchEnv, mortal: Mortal) -> None:
    mortal_sfn: Any = MortalStepFunctions(env.sfn, mortal)
    deps = Deps(env.settings, clock=env.clock, sfn_factory=lambda: mortal_sfn)
    doomed = dispatcher(env, store=MortalStore(DynamoDispatchStore(), mortal), deps=deps)
    with contextlib.suppress(Crash):
        doomed.tick()
    assert mortal.dead, "the crash point was reached"


@pytest.fixture
def env(clock: FakeClock) -> Iterator[DispatchEnv]:
    clock.set(START - timedelta(minutes=10))
    with dispatch_env(clock) as built:
        yield built


def assert_all_dispatched(env: DispatchEnv, trigger_ids: list[str]) -> None:
    assert_exactly_once(env, {(trigger, SCHEDULED) for trigger in trigger_ids})
    for trigger in trigger_ids:
        record = stored(trigger)
        assert record.claim_name is None
        assert record.next_run_at == START + timedelta(days=1)
        assert record.due_at == "2026-11-27T15:00:00Z"


@pytest.mark.parametrize(
    ("when", "operation"),
    [
        ("before", "advance"),  # nothing written yet
        ("after", "advance"),  # claimed, not started
        ("after", "start_execution"),  # started, claim not released
        ("after", "release"),  # one occurrence done, the others anywhere
    ],
)
def test_a_crash_at_any_step_boundary_is_redriven_within_two_ticks_and_doubles_nothing(
    env: DispatchEnv, when: str, operation: str
) -> None:
    trigger_ids = seed_many(env, 24, cron_expression="0 15 * * *")
    env.clock.set(START - timedelta(seconds=100))
    tick_until_death(env, Mortal(when, operation, nth=6))

    for _ in range(2):
        env.clock.advance(60)
        report = dispatcher(env).tick()
        assert report.counts["errors"] == 0

    assert_all_dispatched(env, trigger_ids)


@pytest.mark.parametrize("operation", ["renew_lease", "start_execution"])
def test_a_crash_while_redriving_is_redriven_again(env: DispatchEnv, operation: str) -> None:
    trigger_ids = seed_many(env, 12, cron_expression="0 15 * * *")
    env.clock.set(START - timedelta(seconds=100))
    # A dispatcher claimed every occurrence, then died before starting any.
    store = DynamoDispatchStore()
    for row in due_rows(env):
        claim = Claim(START, scheduled_execution_name(row.tenant_id, row.trigger_id, row.incarnation, 1, START), 1)
        assert store.advance(row, Advance(START + timedelta(days=1), 0, 0, claim, START - timedelta(seconds=40)))

    env.clock.advance(60)
    tick_until_death(env, Mortal("after", operation, nth=3))
    taken_over = [
        trigger for trigger in trigger_ids if stored(trigger).due_at == at(env.clock() + timedelta(seconds=60))
    ]
    assert taken_over, "the second dispatcher renewed leases before it died"
    env.clock.advance(60)
    report = dispatcher(env).tick()

    assert report.counts["redriven"] > 0
    assert_all_dispatched(env, trigger_ids)


def test_throttling_from_both_services_is_retried_with_backoff(env: DispatchEnv) -> None:
    trigger_ids = seed_many(env, 40, cron_expression="0 15 * * *")
    env.clock.set(START - timedelta(seconds=100))
    sleeps = SleepRecorder()

    with throttling(env, {"Query", "UpdateItem", "StartExecution"}, times=2) as throttler:
        report = dispatcher(env, sleep=sleeps).tick()

    assert report.counts["errors"] == 0
    assert report.counts["dispatched"] == 40
    operations = {key.split(":")[0] for key in throttler.seen}
    assert operations == {"Query", "UpdateItem", "StartExecution"}
    assert set(throttler.seen.values()) == {3}, "every request got through on its third try"
    assert report.counts["throttle_retries"] == throttler.throttled == len(sleeps.delays)
    assert all(0 <= delay <= START_BACKOFF.cap_seconds * 2 for delay in sleeps.delays)
    assert_all_dispatched(env, trigger_ids)


def test_startexecution_throttled_past_the_backoff_leaves_the_claim_to_a_redrive(env: DispatchEnv) -> None:
    trigger_ids = seed_many(env, 5, cron_expression="0 15 * * *")
    env.clock.set(START - timedelta(seconds=100))

    with throttling(env, {"StartExecution"}, times=10_000):  # every try during this tick
        throttled = dispatcher(env).tick()

    assert throttled.counts["errors"] == 5
    assert throttled.counts["dispatched"] == 0
    assert all(stored(trigger).claim_name is not None for trigger in trigger_ids)

    env.clock.advance(60)
    recovered = dispatcher(env).tick()

    assert recovered.counts["redriven"] == 5
    assert_all_dispatched(env, trigger_ids)

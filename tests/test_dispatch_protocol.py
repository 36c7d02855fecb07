"""The claim protocol on one dispatcher (docs/dispatcher.md): what a tick writes, starts and skips.

Moto records executions without running them: the dispatcher's contract ends at StartExecution,
whose name uniqueness plain moto enforces (tests/dispatch_support.py says more).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sundial.contracts.api import TriggerPatch
from sundial.domain.errors import ValidationFailedError
from sundial.domain.missed_runs import ON_TIME_GRACE
from sundial.domain.naming import invocation_id_for, scheduled_execution_name
from sundial.services import dispatcher as dispatch_service
from sundial.services.dispatcher import plan
from sundial.services.triggers import delete_trigger, update_trigger
from sundial.store.dispatch import Advance, Claim, DueRow, DynamoDispatchStore

from tests.conftest import START, FakeClock
from tests.dispatch_support import (
    EDITOR,
    PATH,
    DispatchEnv,
    assert_exactly_once,
    at,
    create,
    dispatch_env,
    dispatcher,
    due_rows,
    executions,
    seed,
    stored,
)


@pytest.fixture
def env(clock: FakeClock) -> Iterator[DispatchEnv]:
    clock.set(START - timedelta(minutes=10))
    with dispatch_env(clock) as built:
        yield built


def tick_at(env: DispatchEnv, moment: datetime) -> dispatch_service.TickReport:
    env.clock.set(moment)
    return dispatcher(env).tick()


def test_an_occurrence_is_claimed_within_the_lookahead_and_started_once_under_its_idempotency_key(
    env: DispatchEnv,
) -> None:
    trigger_id = create(env, cron_expression="0 15 * * *")

    early = tick_at(env, START - timedelta(seconds=121))
    assert early.counts["dispatched"] == 0
    assert executions(env) == []

    report = tick_at(env, START - timedelta(seconds=120))

    name = scheduled_execution_name("acme", trigger_id, stored(trigger_id).incarnation, 1, START)
    assert executions(env) == [
        {
            "name": name,
            "input": {
                "tenantId": "acme",
                "projectId": "website",
                "agentId": "reporter",
                "triggerId": trigger_id,
                "incarnation": stored(trigger_id).incarnation,
                "invocationId": invocation_id_for(name, START),
                "kind": "scheduled",
                "scheduledFor": "2026-11-26T15:00:00Z",
                "scheduleVersion": 1,
                "idempotencyKey": name,
                "startsAt": "2026-11-26T15:00:00Z",
                "following": "2026-11-27T15:00:00Z",
            },
        }
    ]
    assert report.counts == {"due": 1, "dispatched": 1}
    assert report.lags_seconds == [-120.0]
    record = stored(trigger_id)
    assert record.next_run_at == START + timedelta(days=1)
    assert record.due_at == "2026-11-27T15:00:00Z"
    assert record.due_shard is not None
    assert (record.claim_for, record.claim_name, record.claim_version) == (None, None, None)

    again = tick_at(env, START - timedelta(seconds=60))
    assert again.counts["dispatched"] == 0
    assert len(executions(env)) == 1


def test_a_one_time_trigger_leaves_the_index_once_claimed_and_never_runs_again(env: DispatchEnv) -> None:
    trigger_id = create(env, run_at=at(START))

    tick_at(env, START - timedelta(seconds=90))

    record = stored(trigger_id)
    assert (record.next_run_at, record.due_at, record.due_shard, record.claim_name) == (None, None, None, None)
    assert record.enabled, "the runner disables it when its run finishes"
    assert due_rows(env) == []
    for later in (START, START + timedelta(minutes=5), START + timedelta(days=2)):
        assert tick_at(env, later).counts["due"] == 0
    assert_exactly_once(env, {(trigger_id, "2026-11-26T15:00:00Z")})


def test_disabled_deleted_and_finished_one_time_triggers_are_never_dispatched(env: DispatchEnv) -> None:
    created_disabled = create(env, cron_expression="*/5 * * * *", enabled=False)
    disabled_later = create(env, cron_expression="*/5 * * * *")
    deleted = create(env, cron_expression="*/5 * * * *")
    finished = create(env, run_at=at(START))
    tick_at(env, START - timedelta(seconds=100))
    update_trigger(env.deps, EDITOR, PATH, disabled_later, TriggerPatch(enabled=False))
    delete_trigger(env.deps, EDITOR, PATH, deleted)
    # What the runner does once the one-time run has finished.
    update_trigger(env.deps, EDITOR, PATH, finished, TriggerPatch(enabled=False))
    before = len(executions(env))

    for minutes in range(0, 60, 5):
        report = tick_at(env, START + timedelta(minutes=minutes))
        assert report.counts["due"] == 0

    started = executions(env)
    assert len(started) == before
    assert created_disabled not in {item["input"]["triggerId"] for item in started}
    assert stored(disabled_later).due_at is None
    assert stored(created_disabled).due_at is None


def test_a_live_claim_is_left_alone_and_an_expired_one_is_redriven_once(env: DispatchEnv) -> None:
    trigger_id = create(env, cron_expression="0 15 * * *")
    env.clock.set(START - timedelta(seconds=110))
    store = DynamoDispatchStore()
    (row,) = due_rows(env)
    name = scheduled_execution_name("acme", trigger_id, stored(trigger_id).incarnation, 1, START)
    lease_until = START - timedelta(seconds=50)
    # A dispatcher claimed the occurrence and died before starting it.
    claim = Claim(START, name, 1)
    assert store.advance(row, Advance(START + timedelta(days=1), 0, 0, claim, lease_until))

    live = tick_at(env, START - timedelta(seconds=60))
    assert live.counts == {"in_flight": 1}
    assert executions(env) == []

    expired = tick_at(env, lease_until)
    assert expired.counts == {"due": 1, "redriven": 1, "dispatched": 1}
    assert [item["name"] for item in executions(env)] == [name]
    record = stored(trigger_id)
    assert record.claim_name is None
    assert record.due_at == "2026-11-27T15:00:00Z"


def test_an_existing_execution_counts_as_already_dispatched(env: DispatchEnv) -> None:
    trigger_id = create(env, cron_expression="0 15 * * *")
    name = scheduled_execution_name("acme", trigger_id, stored(trigger_id).incarnation, 1, START)
    env.sfn.start_execution(stateMachineArn=env.state_machine_arn, name=name, input=json.dumps({"other": 1}))

    report = tick_at(env, START - timedelta(seconds=90))

    assert report.counts == {"due": 1, "already_dispatched": 1}
    assert len(executions(env)) == 1
    record = stored(trigger_id)
    assert (record.claim_name, record.next_run_at) == (None, START + timedelta(days=1))


@pytest.mark.parametrize(
    ("window", "catch_up_runs", "skipped"),
    [(None, ["2026-11-26T18:00:00Z"], 35), (0, [], 36)],
    ids=["default-window", "no-catch-up"],
)
def test_after_a_three_hour_outage_only_the_latest_missed_run_may_catch_up(
    env: DispatchEnv, window: int | None, catch_up_runs: list[str], skipped: int
) -> None:
    fields: dict[str, Any] = {} if window is None else {"catch_up_window_seconds": window}
    env.clock.set(START - timedelta(minutes=4))
    trigger_id = create(env, cron_expression="*/5 * * * *", **fields)
    tick_at(env, START - timedelta(seconds=90))  # claims 15:00, the last run before the outage
    assert stored(trigger_id).next_run_at == START + timedelta(minutes=5)

    # Dispatcher down from 15:00:30 to 18:02: 15:05 … 18:00 (36 occurrences) were missed.
    report = tick_at(env, START + timedelta(hours=3, minutes=2))

    assert report.counts["missed_skipped"] == skipped
    assert report.counts["dispatched"] == len(catch_up_runs)
    record = stored(trigger_id)
    assert record.missed_runs_skipped == skipped
    assert record.next_run_at == START + timedelta(hours=3, minutes=5)
    tick_at(env, START + timedelta(hours=3, minutes=3))  # the regular 18:05 run is claimed as usual
    expected = {"2026-11-26T15:00:00Z", *catch_up_runs, "2026-11-26T18:05:00Z"}
    assert_exactly_once(env, {(trigger_id, scheduled) for scheduled in expected})


def test_a_one_time_trigger_missed_beyond_its_window_is_skipped_and_disabled(env: DispatchEnv) -> None:
    trigger_id = create(env, run_at=at(START), catch_up_window_seconds=600)

    tick_time = START + timedelta(minutes=11)
    report = tick_at(env, tick_time)

    assert report.counts == {"due": 1, "missed_skipped": 1}
    assert executions(env) == []
    record = stored(trigger_id)
    assert (record.enabled, record.next_run_at, record.due_at, record.missed_runs_skipped) == (False, None, None, 1)
    # The same write as after a run (store.triggers.used_up_actions): an edit read before it now conflicts.
    assert (record.schedule_version, record.revision, record.updated_at) == (2, 2, tick_time)


def test_a_tick_stops_claiming_when_time_runs_low_and_the_next_tick_finishes(env: DispatchEnv) -> None:
    trigger_ids = seed(env, 30, cron_expression="0 15 * * *")
    env.clock.set(START - timedelta(seconds=100))
    starts: list[str] = []
    original = env.sfn.start_execution

    def counting_start(**kwargs: str) -> object:
        starts.append(kwargs["name"])
        return original(**kwargs)

    env.sfn.start_execution = counting_start
    # 60 s left at first; 5 s (under the 10 s margin) once ten executions have started.
    first = dispatcher(env).tick(remaining_seconds=lambda: 60.0 if len(starts) < 10 else 5.0)

    assert first.stopped_early
    assert 10 <= first.counts["dispatched"] < 30
    assert first.counts["errors"] == 0
    outstanding = [trigger for trigger in trigger_ids if stored(trigger).claim_name is not None]
    assert outstanding == [], "a claim once written is always carried through"

    env.clock.set(START - timedelta(seconds=40))
    second = dispatcher(env).tick()

    assert not second.stopped_early
    assert first.counts["dispatched"] + second.counts["dispatched"] == 30
    assert_exactly_once(env, {(trigger, "2026-11-26T15:00:00Z") for trigger in trigger_ids})


def test_stale_index_rows_are_rechecked_by_the_conditional_writes(env: DispatchEnv) -> None:
    trigger_ids = seed(env, 6, cron_expression="0 15 * * *")
    env.clock.set(START - timedelta(seconds=100))
    stale = due_rows(env)
    assert len(stale) == 6
    dispatcher(env).tick()

    late = dispatcher(env)
    report = dispatch_service.TickReport()
    for row in stale:
        late.handle(row, START, report)

    assert report.counts == {"due": 6, "claim_conflicts": 6}
    assert_exactly_once(env, {(trigger, "2026-11-26T15:00:00Z") for trigger in trigger_ids})


def row_for(cron: str | None, next_run_at: datetime, window: int = 3600, run_at: datetime | None = None) -> DueRow:
    return DueRow(
        pk="acme#t",
        tenant_id="acme",
        project_id="p",
        agent_id="a",
        trigger_id="t",
        incarnation="0123abcd",
        cron_expression=cron,
        cron_timezone="UTC",
        run_at=run_at,
        catch_up_window_seconds=window,
        schedule_version=1,
        next_run_at=next_run_at,
        due_at=at(next_run_at),
        claim=None,
    )


def test_plan_treats_up_to_a_minute_late_as_on_time_whatever_the_catch_up_window() -> None:
    scheduled = datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    tomorrow = scheduled + timedelta(days=1)
    row = row_for("0 15 * * *", scheduled, window=0)

    assert plan(row, scheduled + ON_TIME_GRACE) == dispatch_service.Plan(scheduled, tomorrow, 0)
    assert plan(row, scheduled + ON_TIME_GRACE + timedelta(seconds=1)) == dispatch_service.Plan(None, tomorrow, 1)
    assert plan(row, scheduled - timedelta(seconds=90)) == dispatch_service.Plan(scheduled, tomorrow, 0)


def test_plan_runs_the_latest_of_two_on_time_minutes_and_counts_the_other() -> None:
    now = datetime(2026, 11, 26, 15, 1, 0, tzinfo=UTC)
    assert plan(row_for("* * * * *", now - timedelta(minutes=1)), now) == dispatch_service.Plan(
        now, now + timedelta(minutes=1), 1
    )


def test_plan_jumps_over_a_backlog_longer_than_the_scan_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(dispatch_service, "MAX_MISSED_SCAN", 50)
    now = datetime(2026, 11, 26, 15, 0, 30, tzinfo=UTC)
    step = plan(row_for("* * * * *", now - timedelta(days=3), window=600), now)
    assert step.occurrence == datetime(2026, 11, 26, 15, 0, tzinfo=UTC)
    assert step.next_run_at == datetime(2026, 11, 26, 15, 1, tzinfo=UTC)
    # 50 counted one by one, then the 10 minutes of the window (the last of which runs).
    assert step.skipped == 50 + 9


def test_a_redriven_claim_is_followed_by_its_next_occurrence_in_the_same_tick(env: DispatchEnv) -> None:
    env.clock.set(START - timedelta(minutes=14))
    trigger_id = create(env, cron_expression="*/5 * * * *")
    (row,) = due_rows(env)
    claimed, following = START - timedelta(minutes=10), START - timedelta(minutes=5)
    assert row.next_run_at == claimed
    # A dispatcher claimed 14:50 at 14:48 and died; its lease ran out at 14:49.
    name = scheduled_execution_name("acme", trigger_id, stored(trigger_id).incarnation, 1, claimed)
    assert DynamoDispatchStore().advance(
        row, Advance(following, 0, 0, Claim(claimed, name, 1), START - timedelta(minutes=11))
    )

    report = tick_at(env, START - timedelta(minutes=6, seconds=30))

    assert report.counts["redriven"] == 1
    assert report.counts["dispatched"] == 2, "the late 14:50 run, then 14:55 (within the lookahead) at once"
    assert sorted(item["input"]["scheduledFor"] for item in executions(env)) == [at(claimed), at(following)]
    assert stored(trigger_id).next_run_at == START


def test_a_row_that_cannot_be_planned_fails_without_leaving_a_claim(env: DispatchEnv) -> None:
    trigger_id = create(env, cron_expression="0 15 * * *")
    record = stored(trigger_id)
    record.update(actions=[type(record).cron_expression.set("not a cron")])

    report = tick_at(env, START - timedelta(seconds=90))

    assert report.counts["errors"] == 1
    assert executions(env) == []
    after = stored(trigger_id)
    assert (after.claim_name, after.next_run_at, after.due_at) == (None, START, "2026-11-26T15:00:00Z")


def test_toggling_a_one_time_trigger_after_its_instant_never_claims_it_again(env: DispatchEnv) -> None:
    trigger_id = create(env, run_at=at(START))
    tick_at(env, START - timedelta(seconds=60))
    assert len(executions(env)) == 1

    env.clock.set(START + timedelta(seconds=20))  # its run is under way
    update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch(enabled=False))
    update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch(cron_timezone="Europe/Berlin"))
    with pytest.raises(ValidationFailedError, match="has passed"):
        update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch(enabled=True))
    tick_at(env, START + timedelta(seconds=30))

    assert_exactly_once(env, {(trigger_id, at(START))})
    assert stored(trigger_id).next_run_at is None


def test_a_zone_change_does_not_reschedule_a_one_time_trigger(env: DispatchEnv) -> None:
    trigger_id = create(env, run_at=at(START + timedelta(hours=1)))
    version = stored(trigger_id).schedule_version

    update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch(cron_timezone="Asia/Tokyo"))

    record = stored(trigger_id)
    assert (record.cron_timezone, record.schedule_version) == ("Asia/Tokyo", version)


def test_a_trigger_recreated_under_a_deleted_ones_id_still_runs_the_claimed_instant(env: DispatchEnv) -> None:
    trigger_id = create(env, id="nightly", cron_expression="0 15 * * *")
    tick_at(env, START - timedelta(seconds=100))
    (first,) = executions(env)
    env.sfn.stop_execution(executionArn=execution_arn(env, first["name"]))  # as the delete's cascade does
    delete_trigger(env.deps, EDITOR, PATH, trigger_id)

    assert create(env, id="nightly", cron_expression="0 15 * * *") == trigger_id
    tick_at(env, START - timedelta(seconds=90))

    names = {item["name"] for item in executions(env) if item["input"]["scheduledFor"] == at(START)}
    assert len(names) == 2, "the re-created trigger needs an execution of its own for 15:00"


def execution_arn(env: DispatchEnv, name: str) -> str:
    return f"{env.state_machine_arn.replace(':stateMachine:', ':execution:')}:{name}"

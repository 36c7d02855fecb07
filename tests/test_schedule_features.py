"""Interval schedules, startAt/endAt bounds, maxRuns and jitter (SPEC §2, §4): over HTTP and through runs.

The API tests call the API Lambda against moto. The run tests claim with the real dispatcher and
drive the runner's steps in the order the state machine would, with a clock they set (as in
tests/test_exactly_once_edges.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
from sundial.contracts.api import TriggerPatch
from sundial.contracts.execution import ExecutionInput
from sundial.domain.schedule import (
    BoundedSchedule,
    CronSchedule,
    IntervalSchedule,
    describe_limits,
    jitter_offset,
    start_of,
)
from sundial.services import runner
from sundial.services import triggers as trigger_service
from sundial.services.triggers import get_trigger, update_trigger
from sundial.store import invocations as invocation_store

from tests.api_support import assert_error, trigger_path
from tests.conftest import BASE, START, ApiClient, FakeClock
from tests.dispatch_support import EDITOR, PATH, DispatchEnv, create, dispatch_env, dispatcher, executions, stored
from tests.test_exactly_once_edges import RecordingAgent


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def post(api: ApiClient, **fields: Any) -> Any:
    return api.request("POST", BASE, {"name": "t", **fields})


# --- domain ------------------------------------------------------------------------------------


def test_an_interval_runs_in_absolute_time_from_its_anchor_across_a_dst_change() -> None:
    anchor = datetime(2026, 10, 24, 22, 30, tzinfo=UTC)  # Europe/Berlin leaves summer time on 25 October
    schedule = IntervalSchedule(90 * 60, anchor)
    runs = schedule.next_runs(anchor - timedelta(days=1), 20)
    assert runs[0] == anchor
    assert {later - earlier for earlier, later in itertools.pairwise(runs)} == {timedelta(minutes=90)}
    assert schedule.next_after(anchor) == anchor + timedelta(minutes=90)
    assert schedule.next_after(anchor + timedelta(minutes=89, seconds=59)) == anchor + timedelta(minutes=90)


def test_bounds_clip_a_cron_schedule_at_both_ends() -> None:
    start, end = datetime(2026, 12, 1, 9, 0, tzinfo=UTC), datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
    schedule = BoundedSchedule(CronSchedule.parse("0 9 * * *"), start, end)
    assert schedule.next_runs(START, 10) == [start, start + timedelta(days=1), end]
    assert schedule.next_after(end) is None


def test_the_description_names_every_limit_as_the_issue_words_it() -> None:
    schedule = BoundedSchedule(
        IntervalSchedule(5400, datetime(2026, 12, 1, 9, 0, tzinfo=UTC)), None, datetime(2027, 1, 31, tzinfo=UTC)
    )
    assert (
        schedule.describe()
        + describe_limits(10, 300)
        == "Every 90 minutes from 2026-12-01 09:00 UTC, until 2027-01-31 00:00 UTC, at most 10 runs, "
        "with up to 5 minutes of jitter"
    )


def test_jitter_is_deterministic_within_its_span_and_never_passes_the_next_occurrence() -> None:
    hourly = CronSchedule.parse("0 * * * *")
    nominal = [START + timedelta(hours=hour) for hour in range(200)]
    offsets = [jitter_offset(hourly, "inc-a", 600, at) for at in nominal]
    assert offsets == [jitter_offset(hourly, "inc-a", 600, at) for at in nominal]
    assert all(0 <= offset < 600 for offset in offsets)
    assert len(set(offsets)) > 100, "offsets spread over the span"
    assert offsets != [jitter_offset(hourly, "inc-b", 600, at) for at in nominal], "another incarnation, other offsets"
    minutely = IntervalSchedule(60, START)
    starts = [start_of(minutely, "inc-a", 3600, START + timedelta(minutes=k)) for k in range(300)]
    assert all(start - (START + timedelta(minutes=k)) < timedelta(seconds=60) for k, start in enumerate(starts))
    assert starts == sorted(starts)


# --- API: fields, validation, preview ----------------------------------------------------------


def test_an_interval_trigger_is_anchored_at_the_next_minute_and_shows_its_runs(
    api: ApiClient, clock: FakeClock
) -> None:
    clock.set(START + timedelta(seconds=20))
    created = post(api, intervalSeconds=5400)
    assert created.status == 201, created.body
    body = created.body
    anchor = START + timedelta(minutes=1)
    assert (body["intervalSeconds"], body["startAt"], body["cronExpression"]) == (5400, iso(anchor), None)
    assert body["nextRunAt"] == iso(anchor)
    assert body["scheduleDescription"] == "Every 90 minutes from 2026-11-26 15:01 UTC"
    detail = api.request("GET", trigger_path(body["id"])).body
    assert detail["upcomingRuns"] == [iso(anchor + timedelta(minutes=90 * k)) for k in range(5)]


def test_bounds_and_max_runs_shape_the_upcoming_runs(api: ApiClient) -> None:
    start, end = START + timedelta(days=2), START + timedelta(days=10)
    created = post(api, cronExpression="0 9 * * *", startAt=iso(start), endAt=iso(end), maxRuns=3)
    assert created.status == 201, created.body
    body = created.body
    first = datetime(2026, 11, 29, 9, 0, tzinfo=UTC)
    assert (body["maxRuns"], body["runsRemaining"], body["nextRunAt"]) == (3, 3, iso(first))
    assert body["scheduleDescription"] == (
        "At 09:00 (UTC), from 2026-11-28 15:00 UTC, until 2026-12-06 15:00 UTC, at most 3 runs"
    )
    detail = api.request("GET", trigger_path(body["id"])).body
    assert detail["upcomingRuns"] == [iso(first + timedelta(days=k)) for k in range(3)]


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"intervalSeconds": 59}, "intervalSeconds", "greater than or equal to 60"),
        ({"intervalSeconds": 31_536_001}, "intervalSeconds", "less than or equal to 31536000"),
        ({"cronExpression": "0 9 * * *", "jitterSeconds": 3601}, "jitterSeconds", "less than or equal to 3600"),
        ({"cronExpression": "0 9 * * *", "maxRuns": 0}, "maxRuns", "greater than or equal to 1"),
        (
            {"cronExpression": "0 9 * * *", "startAt": "2026-12-02T00:00:00Z", "endAt": "2026-12-01T00:00:00Z"},
            "endAt",
            "must be after startAt",
        ),
        ({"runAt": "2026-11-27T00:00:00Z", "startAt": "2026-11-27T00:00:00Z"}, "startAt", "recurring"),
        ({"runAt": "2026-11-27T00:00:00Z", "endAt": "2026-11-28T00:00:00Z"}, "endAt", "recurring"),
        ({"runAt": "2026-11-27T00:00:00Z", "maxRuns": 2}, "maxRuns", "recurring"),
        ({"cronExpression": "0 9 * * *", "endAt": "2026-11-26T10:00:00Z"}, "endAt", "no occurrence after now"),
        ({"intervalSeconds": 3600, "startAt": 1700000000}, "startAt", "ISO-8601"),
    ],
)
def test_a_bad_schedule_field_is_a_422_naming_it(api: ApiClient, body: dict[str, Any], field: str, words: str) -> None:
    response = post(api, **body)
    error = assert_error(response, 422, "validation_failed")
    assert any(detail["field"] == f"body.{field}" and words in detail["message"] for detail in error["details"]), error


def test_two_schedule_kinds_at_once_are_a_400_naming_all_three(api: ApiClient) -> None:
    error = assert_error(post(api, cronExpression="0 9 * * *", intervalSeconds=3600), 400, "bad_request")
    assert {detail["field"] for detail in error["details"]} == {
        "body.cronExpression",
        "body.runAt",
        "body.intervalSeconds",
    }


def test_the_preview_takes_intervals_bounds_and_limits(api: ApiClient) -> None:
    response = api.request(
        "POST",
        "/schedule-preview",
        {"intervalSeconds": 3600, "startAt": iso(START), "maxRuns": 3, "jitterSeconds": 120, "after": iso(START)},
    )
    assert response.status == 200, response.body
    assert response.body == {
        "nextRuns": [iso(START + timedelta(hours=k)) for k in (1, 2, 3)],
        "scheduleDescription": "Every 1 hour from 2026-11-26 15:00 UTC, at most 3 runs, with up to 2 minutes of jitter",
    }


def test_switching_a_cron_trigger_to_an_interval_anchors_it_and_a_bad_patch_changes_nothing(api: ApiClient) -> None:
    trigger_id = post(api, cronExpression="0 9 * * *").body["id"]
    refused = api.request("PATCH", trigger_path(trigger_id), {"intervalSeconds": 3600, "cronExpression": "0 * * * *"})
    assert_error(refused, 400, "bad_request")
    switched = api.request("PATCH", trigger_path(trigger_id), {"intervalSeconds": 3600})
    assert switched.status == 200, switched.body
    assert (switched.body["cronExpression"], switched.body["startAt"]) == (None, iso(START))
    assert switched.body["nextRunAt"] == iso(START + timedelta(hours=1))
    to_cron = api.request("PATCH", trigger_path(trigger_id), {"cronExpression": "30 9 * * *"})
    assert (to_cron.body["intervalSeconds"], to_cron.body["cronExpression"]) == (None, "30 9 * * *")


# --- runs: maxRuns, endAt, jitter --------------------------------------------------------------


@pytest.fixture
def env(clock: FakeClock) -> Iterator[DispatchEnv]:
    clock.set(START - timedelta(minutes=10))
    with dispatch_env(clock) as built:
        yield built


@pytest.fixture
def agent() -> RecordingAgent:
    return RecordingAgent()


def started_runs(env: DispatchEnv, trigger_id: str) -> list[ExecutionInput]:
    inputs = [ExecutionInput.model_validate(item["input"]) for item in executions(env)]
    return sorted((run for run in inputs if run.trigger_id == trigger_id), key=lambda run: run.scheduled_for)


def prepare(env: DispatchEnv, run: ExecutionInput) -> runner.RunState:
    arn = f"{env.state_machine_arn.replace(':stateMachine:', ':execution:')}:{run.idempotency_key}"
    return runner.prepare(env.deps, runner.PrepareEvent(input=run, execution_arn=arn))


def finish(env: DispatchEnv, agent: RecordingAgent, state: runner.RunState) -> str:
    while (state := runner.attempt(env.deps, agent, state)).outcome == "retry":
        pass
    return str(invocation_store.load(state.tenant_id, state.trigger_id, state.incarnation, state.invocation_id).status)


def claim_all(env: DispatchEnv, until: datetime) -> None:
    """Tick every 30 s up to `until`, as the schedule runs its dispatcher."""
    while env.clock.current < until:
        env.clock.advance(30)
        dispatcher(env).tick()


def run_first_two(env: DispatchEnv, agent: RecordingAgent, trigger_id: str) -> None:
    """Claim the trigger's first occurrences and run the first two to completion."""
    claim_all(env, START - timedelta(minutes=8))
    for run in started_runs(env, trigger_id)[:2]:
        env.clock.set(datetime.fromisoformat(run.scheduled_for))
        assert finish(env, agent, prepare(env, run)) == "completed"


def test_max_runs_counts_started_runs_once_and_then_finishes_the_trigger(
    env: DispatchEnv, agent: RecordingAgent
) -> None:
    trigger_id = create(env, cron_expression="* * * * *", max_runs=2)
    claim_all(env, START + timedelta(minutes=1))
    runs = started_runs(env, trigger_id)
    assert len(runs) >= 3, "the lookahead claims more occurrences than the runs left"
    statuses = []
    for run in runs:
        env.clock.set(datetime.fromisoformat(run.scheduled_for))
        state = prepare(env, run)
        # Attempt is retried by the state machine after a Lambda error: the run must count once.
        statuses.append(finish(env, agent, state))
        statuses.append(finish(env, agent, state))
    assert statuses[:4] == ["completed"] * 4
    assert set(statuses[4:]) == {"cancelled"}
    assert len(agent.calls) == 2
    record = stored(trigger_id)
    assert (record.enabled, record.next_run_at, int(record.runs_started)) == (False, None, 2)
    shown = get_trigger(env.deps, EDITOR, PATH, trigger_id)
    assert (shown.runs_remaining, shown.finished_reason, shown.next_run_at) == (0, "maxRunsReached", None)
    assert record.due_at is None, "out of the due index: nothing more is claimed"


def test_two_runs_racing_for_the_last_remaining_run_start_one(env: DispatchEnv, agent: RecordingAgent) -> None:
    trigger_id = create(env, cron_expression="* * * * *", max_runs=1, overlap_policy="allow")
    claim_all(env, START)
    first, second = started_runs(env, trigger_id)[:2]
    env.clock.set(datetime.fromisoformat(second.scheduled_for))
    states = [prepare(env, first), prepare(env, second)]
    # Both read the trigger with one run left before either counts it.
    reads = [stored(trigger_id), stored(trigger_id)]
    records = [invocation_store.load(s.tenant_id, s.trigger_id, s.incarnation, s.invocation_id) for s in states]
    outcomes = [
        invocation_store.mark_running_counted(record, read, env.clock.current, last=True)
        for record, read in zip(records, reads, strict=True)
    ]
    assert outcomes == ["running", "trigger_changed"]
    assert int(stored(trigger_id).runs_started) == 1
    assert finish(env, agent, states[1]) == "cancelled"


def test_an_edit_of_max_runs_below_the_runs_started_is_refused(env: DispatchEnv, agent: RecordingAgent) -> None:
    trigger_id = create(env, cron_expression="* * * * *", max_runs=5)
    run_first_two(env, agent, trigger_id)
    with pytest.raises(Exception, match="more than the 2 scheduled runs already started"):
        update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch(max_runs=2))
    assert update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch(max_runs=3)).runs_remaining == 1


def test_a_trigger_finishes_after_its_last_occurrence_before_end_at(env: DispatchEnv, agent: RecordingAgent) -> None:
    end = START + timedelta(minutes=2)
    trigger_id = create(env, cron_expression="* * * * *", end_at=end)
    claim_all(env, end)
    runs = started_runs(env, trigger_id)
    assert [run.scheduled_for for run in runs][-1] == iso(end)
    for run in runs:
        env.clock.set(datetime.fromisoformat(run.scheduled_for))
        assert finish(env, agent, prepare(env, run)) == "completed"
    shown = get_trigger(env.deps, EDITOR, PATH, trigger_id)
    assert (shown.enabled, shown.next_run_at, shown.finished_reason) == (False, None, "ended")


def test_a_missed_last_occurrence_before_end_at_finishes_the_trigger(env: DispatchEnv) -> None:
    end = START + timedelta(minutes=10)
    trigger_id = create(env, cron_expression="*/5 * * * *", end_at=end, catch_up_window_seconds=0)
    env.clock.set(end + timedelta(hours=2))  # the dispatcher was down from 14:50 until past the end
    dispatcher(env).tick()
    assert started_runs(env, trigger_id) == []
    shown = get_trigger(env.deps, EDITOR, PATH, trigger_id)
    assert (shown.enabled, shown.finished_reason, shown.missed_runs_skipped) == (False, "ended", 4)


def test_a_jittered_occurrence_starts_at_its_offset_under_its_nominal_key(
    env: DispatchEnv, agent: RecordingAgent
) -> None:
    trigger_id = create(env, cron_expression="0 * * * *", jitter_seconds=3600, catch_up_window_seconds=0)
    record = stored(trigger_id)
    schedule = CronSchedule.parse("0 * * * *")
    shown = get_trigger(env.deps, EDITOR, PATH, trigger_id)
    expected = start_of(schedule, record.incarnation, 3600, START)
    assert shown.next_run_at == expected
    assert shown.upcoming_runs[1] == start_of(schedule, record.incarnation, 3600, START + timedelta(hours=1))
    claim_all(env, START)
    [run] = started_runs(env, trigger_id)
    assert (run.scheduled_for, run.starts_at) == (iso(START), iso(expected))
    assert run.idempotency_key.endswith("20261126T150000Z"), "keys use the nominal instant"
    # Past the nominal instant by far more than the grace, but on time for its start: it runs.
    env.clock.set(expected + timedelta(seconds=30))
    state = prepare(env, run)
    assert state.starts_at == iso(expected)
    assert finish(env, agent, state) == "completed"
    invocation = invocation_store.load("acme", trigger_id, record.incarnation, run.invocation_id)
    assert (invocation.scheduled_for, invocation.starts_at) == (START, expected)


def _late_starting_incarnation(schedule: CronSchedule, jitter_seconds: int) -> str:
    """The first of a fixed list of incarnations whose 15:00 starts more than two minutes late."""
    for number in itertools.count():
        incarnation = f"{number:016x}"
        if start_of(schedule, incarnation, jitter_seconds, START) - START > timedelta(seconds=120):
            return incarnation
    raise AssertionError("unreachable")


def _claimed_jittered(env: DispatchEnv) -> tuple[str, ExecutionInput, datetime]:
    """An hourly trigger with up to an hour of jitter, its 15:00 claimed; returns its id, run and start.

    The incarnation is chosen (not drawn at random) so that 15:00 starts well after its instant."""
    hourly = CronSchedule.parse("0 * * * *")
    incarnation = _late_starting_incarnation(hourly, 3600)
    with mock.patch.object(trigger_service.secrets, "token_hex", lambda size: incarnation if size == 8 else "x" * 20):
        trigger_id = create(env, cron_expression="0 * * * *", jitter_seconds=3600, catch_up_window_seconds=0)
    assert stored(trigger_id).incarnation == incarnation
    expected = start_of(hourly, incarnation, 3600, START)
    claim_all(env, START)
    [run] = started_runs(env, trigger_id)
    return trigger_id, run, expected


def test_disabling_a_trigger_during_an_occurrences_jitter_stops_it(env: DispatchEnv, agent: RecordingAgent) -> None:
    trigger_id, run, expected = _claimed_jittered(env)
    env.clock.set(START + timedelta(seconds=30))
    state = prepare(env, run)
    update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch(enabled=False))
    env.clock.set(expected)
    assert finish(env, agent, state) == "cancelled"
    assert agent.calls == []


def test_lowering_the_jitter_during_an_occurrences_jitter_runs_it_once(env: DispatchEnv, agent: RecordingAgent) -> None:
    trigger_id, run, expected = _claimed_jittered(env)
    env.clock.set(START + timedelta(seconds=1))
    old = prepare(env, run)
    shown = update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch(jitter_seconds=600))
    new_start = shown.next_run_at
    assert new_start is not None
    assert START + timedelta(seconds=1) < new_start < START + timedelta(seconds=600), "15:00 is kept"
    claim_all(env, START + timedelta(seconds=60))
    fresh = [r for r in started_runs(env, trigger_id) if r.schedule_version != run.schedule_version]
    assert [r.scheduled_for for r in fresh][:1] == [iso(START)]
    fresh_state = prepare(env, fresh[0])
    env.clock.set(new_start)
    assert finish(env, agent, fresh_state) == "completed"
    env.clock.set(expected)
    assert finish(env, agent, old) == "cancelled"
    assert agent.scheduled_for(trigger_id) == [iso(START)]


def test_max_runs_counts_from_zero_when_it_is_set_again(env: DispatchEnv, agent: RecordingAgent) -> None:
    trigger_id = create(env, cron_expression="* * * * *", max_runs=5)
    run_first_two(env, agent, trigger_id)
    update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch(max_runs=None))
    assert update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch(max_runs=2)).runs_remaining == 2

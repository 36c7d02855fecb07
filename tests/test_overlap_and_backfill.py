"""overlapPolicy buffer_one and cancel_other, and backfill (SPEC §3, §5).

The HTTP tests run the real state machine in moto (tests/runner_support.py): runs are started the
way the dispatcher and the API start them, the runner's Lambdas handle every Task, and the Wait
states are recorded instead of slept, with hooks that act at the moment a run begins to wait. The
stepped tests claim with the real dispatcher and call the runner's steps in an order they choose,
to pin interleavings the state machine would only reach by chance.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sundial.adapters.agent_http import AgentRequest, AgentResult, AttemptOutcome
from sundial.contracts.api import BackfillRequest, TriggerPatch
from sundial.contracts.execution import ExecutionInput
from sundial.domain import naming
from sundial.services import ending, runner
from sundial.services import invocations as invocation_service
from sundial.services.triggers import update_trigger
from sundial.store import invocations as invocation_store
from sundial.store.records import InvocationRecord, invocation_partition

from tests.api_support import assert_error, incarnation_of, seed_invocation, trigger_path
from tests.conftest import BASE, ApiClient, FakeClock, Stack, token_claims
from tests.dispatch_support import (
    EDITOR,
    PATH,
    DispatchEnv,
    create,
    dispatch_env,
    dispatcher,
    executions,
    stored,
)
from tests.runner_support import Harness, Reply, Run, runner_harness, wait_for_execution
from tests.test_exactly_once_edges import RecordingAgent

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

AT = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)
FIVE_MINUTES = timedelta(minutes=5)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def harness(stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with runner_harness(stack, monkeypatch) as harness:
        yield harness


def create_every_five_minutes(api: ApiClient, **fields: Any) -> dict[str, Any]:
    created = api.request("POST", BASE, {"name": "Sync", "cronExpression": "*/5 * * * *", **fields})
    assert created.status == 201, created.body
    body: dict[str, Any] = created.body
    return body


def load(trigger_id: str, invocation_id: str) -> InvocationRecord:
    return invocation_store.load("acme", trigger_id, incarnation_of(trigger_id), invocation_id)


def invocation_of(api: ApiClient, trigger_id: str, invocation_id: str) -> dict[str, Any]:
    got = api.request("GET", f"{trigger_path(trigger_id)}/invocations/{invocation_id}")
    assert got.status == 200, got.body
    body: dict[str, Any] = got.body
    return body


# --- buffer_one --------------------------------------------------------------------------------


def test_buffer_one_waits_for_the_running_invocation_then_runs_and_skips_a_further_one(
    harness: Harness, api: ApiClient, stack: Stack
) -> None:
    trigger = create_every_five_minutes(api, overlapPolicy="buffer_one")
    stack.clock.set(AT)
    running = seed_invocation(stack, trigger["id"], AT - FIVE_MINUTES, "running")
    further: list[Run] = []

    def on_first_wait(_execution_arn: str) -> None:
        if further:
            return
        # While one occurrence waits, the next one comes due: it is skipped, the waiting one keeps its place.
        further.append(harness.finish(harness.start_scheduled("acme", trigger["id"], AT + FIVE_MINUTES)))
        assert ending.finish(stack.deps, running, "completed")

    harness.waits.hooks["WaitForOtherRun"] = on_first_wait
    buffered = harness.run_scheduled("acme", trigger["id"], AT)

    assert buffered.status == "SUCCEEDED"
    assert harness.waits.seconds(buffered.execution_arn, "WaitForOtherRun") == [runner.FIRST_LOOK_SECONDS]
    assert buffered.invocation().status == "completed"
    assert [received.body["scheduledFor"] for received in harness.agent.received] == [iso(AT)]
    [skipped] = further
    assert skipped.status == "SUCCEEDED"
    record = skipped.invocation()
    assert (record.status, record.error, record.attempt_number) == ("skipped", runner.ALREADY_WAITING, 0)
    shown = invocation_of(api, trigger["id"], skipped.invocation_id)
    assert (shown["status"], shown["error"]) == ("skipped", runner.ALREADY_WAITING)


def test_a_pending_run_now_counts_as_unfinished_for_buffer_one(harness: Harness, api: ApiClient, stack: Stack) -> None:
    trigger = create_every_five_minutes(api, overlapPolicy="buffer_one")
    stack.clock.set(AT)
    run_now = seed_invocation(stack, trigger["id"], AT - timedelta(seconds=5), "pending", kind="manual")
    looks: list[str] = []

    def on_wait(_execution_arn: str) -> None:
        looks.append("look")
        if len(looks) == 3:
            assert ending.finish(stack.deps, run_now, "completed")

    harness.waits.hooks["WaitForOtherRun"] = on_wait
    buffered = harness.run_scheduled("acme", trigger["id"], AT)

    assert buffered.invocation().status == "completed"
    assert len(harness.waits.seconds(buffered.execution_arn, "WaitForOtherRun")) == 3
    assert len(harness.agent.received) == 1


def test_a_waiting_run_that_is_cancelled_stops_and_frees_the_place(
    harness: Harness, api: ApiClient, stack: Stack
) -> None:
    trigger = create_every_five_minutes(api, overlapPolicy="buffer_one")
    stack.clock.set(AT)
    seed_invocation(stack, trigger["id"], AT - FIVE_MINUTES, "running")
    waited: list[str] = []

    def cancel_the_waiting_run(_execution_arn: str) -> None:
        listed = api.request("GET", f"{trigger_path(trigger['id'])}/invocations", query={"status": "pending"})
        [pending] = listed.body["data"]
        waited.append(pending["id"])
        cancelled = api.request("POST", f"{trigger_path(trigger['id'])}/invocations/{pending['id']}/cancel")
        assert cancelled.status == 200, cancelled.body

    harness.waits.hooks["WaitForOtherRun"] = cancel_the_waiting_run
    first = harness.run_scheduled("acme", trigger["id"], AT)
    assert (first.status, first.invocation().status) == ("ABORTED", "cancelled")

    second = harness.finish(harness.start_scheduled("acme", trigger["id"], AT + FIVE_MINUTES))
    assert waited == [first.invocation_id, second.invocation_id], "the cancelled run's place went to the next one"
    assert second.invocation().status == "cancelled"
    assert harness.agent.received == []


# --- cancel_other ------------------------------------------------------------------------------


def test_cancel_other_cancels_the_running_run_whose_late_result_is_kept_after_cancel(
    harness: Harness, api: ApiClient, stack: Stack
) -> None:
    """The other run's attempt is in flight when the new occurrence cancels it; its answer comes after."""
    trigger = create_every_five_minutes(api, overlapPolicy="cancel_other")
    stack.clock.set(AT)
    later: list[Run] = []

    def start_the_next_occurrence() -> None:
        later.append(harness.finish(harness.start_scheduled("acme", trigger["id"], AT + FIVE_MINUTES)))

    harness.agent.then(Reply(200, {"conversationId": "late"}, action=start_the_next_occurrence))
    first = harness.run_scheduled("acme", trigger["id"], AT)

    [second] = later
    assert second.status == "SUCCEEDED"
    assert second.invocation().status == "completed"
    record = first.invocation()
    assert (record.status, record.error) == ("cancelled", runner.CANCELLED_BY_LATER)
    [attempt] = record.attempts or []
    assert (attempt["outcome"], attempt["afterCancel"], attempt["conversationId"]) == ("succeeded", True, "late")
    assert first.status == "ABORTED", "its execution was stopped"
    assert [received.body["scheduledFor"] for received in harness.agent.received] == [
        iso(AT),
        iso(AT + FIVE_MINUTES),
    ]


def test_cancel_other_runs_when_the_other_run_ended_first(harness: Harness, api: ApiClient, stack: Stack) -> None:
    trigger = create_every_five_minutes(api, overlapPolicy="cancel_other")
    stack.clock.set(AT)
    finished = seed_invocation(stack, trigger["id"], AT - FIVE_MINUTES, "completed")
    run = harness.run_scheduled("acme", trigger["id"], AT)
    assert run.invocation().status == "completed"
    assert load(trigger["id"], finished.invocation_id).status == "completed"


# --- backfill over HTTP ------------------------------------------------------------------------


def daily(api: ApiClient, **fields: Any) -> dict[str, Any]:
    created = api.request("POST", BASE, {"name": "Daily", "cronExpression": "0 9 * * *", **fields})
    assert created.status == 201, created.body
    body: dict[str, Any] = created.body
    return body


def backfill(api: ApiClient, trigger_id: str, start: str, end: str, **kwargs: Any) -> Any:
    return api.request("POST", f"{trigger_path(trigger_id)}/backfill", {"from": start, "to": end}, **kwargs)


def executions_of(stack: Stack) -> list[dict[str, Any]]:
    pages = stack.sfn.get_paginator("list_executions").paginate(stateMachineArn=stack.settings.state_machine_arn)
    return [execution for page in pages for execution in page["executions"]]


def test_backfill_runs_each_occurrence_of_the_range_once_and_a_repeat_starts_nothing(
    harness: Harness, api: ApiClient, stack: Stack
) -> None:
    trigger = daily(api)
    accepted = backfill(api, trigger["id"], "2026-11-22T09:00:00Z", "2026-11-25T09:00:00Z")
    assert accepted.status == 202, accepted.body
    ids = accepted.body["invocationIds"]
    assert (len(ids), accepted.body["started"]) == (3, 3)
    for execution in executions_of(stack):
        wait_for_execution(stack.sfn, execution["executionArn"])
    instants = ["2026-11-22T09:00:00Z", "2026-11-23T09:00:00Z", "2026-11-24T09:00:00Z"]
    assert sorted(received.body["scheduledFor"] for received in harness.agent.received) == instants
    shown = [invocation_of(api, trigger["id"], invocation_id) for invocation_id in ids]
    assert [(item["kind"], item["status"], item["scheduledFor"]) for item in shown] == [
        ("backfill", "completed", instant) for instant in instants
    ]

    again = backfill(api, trigger["id"], "2026-11-22T09:00:00Z", "2026-11-25T09:00:00Z")
    assert (again.status, again.body) == (202, {"invocationIds": ids, "started": 0})
    wider = backfill(api, trigger["id"], "2026-11-21T00:00:00Z", "2026-11-25T10:00:00Z")
    assert wider.body["started"] == 2, "only 2026-11-21 and 2026-11-25 are new"
    assert wider.body["invocationIds"][1:4] == ids
    for execution in executions_of(stack):
        wait_for_execution(stack.sfn, execution["executionArn"])
    assert len(executions_of(stack)) == 5
    assert len(harness.agent.received) == 5


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        ({"from": "2026-11-25T00:00:00Z", "to": "2026-11-24T00:00:00Z"}, "from", "earlier than 'to'"),
        ({"from": "2026-11-25T00:00:00Z", "to": "2026-11-27T00:00:00Z"}, "to", "future"),
        ({"from": "2026-11-25T10:00:00Z", "to": "2026-11-25T11:00:00Z"}, "from", "no occurrence"),
        ({"from": "2026-11-25", "to": "2026-11-26T00:00:00Z"}, "from", ""),
        ({"from": "2026-11-25T00:00:00Z"}, "to", ""),
        ({"from": "2026-11-25T00:00:00Z", "to": "2026-11-26T00:00:00Z", "count": 2}, "count", ""),
    ],
)
def test_a_bad_backfill_range_is_a_422_naming_the_field_and_starts_nothing(
    api: ApiClient, stack: Stack, body: dict[str, Any], field: str, words: str
) -> None:
    stack.clock.set(datetime(2026, 11, 26, 15, 0, tzinfo=UTC))
    trigger = daily(api)
    response = api.request("POST", f"{trigger_path(trigger['id'])}/backfill", body)
    error = assert_error(response, 422, "validation_failed")
    assert any(detail["field"].endswith(field) and words in detail["message"] for detail in error["details"]), error
    assert executions_of(stack) == []


def test_a_backfill_of_more_than_a_thousand_occurrences_is_refused(api: ApiClient, stack: Stack) -> None:
    stack.clock.set(datetime(2026, 11, 26, 15, 0, tzinfo=UTC))
    trigger = create_every_five_minutes(api)
    too_many = backfill(api, trigger["id"], "2026-11-22T00:00:00Z", "2026-11-26T00:00:00Z")
    error = assert_error(too_many, 422, "validation_failed")
    assert error["details"] == [{"field": "body.to", "message": "the range holds more than 1,000 occurrences"}]
    assert executions_of(stack) == []


def test_a_viewer_may_not_backfill_and_another_tenant_learns_nothing(api: ApiClient, stack: Stack) -> None:
    stack.clock.set(datetime(2026, 11, 26, 15, 0, tzinfo=UTC))
    trigger = daily(api)
    as_viewer = backfill(
        api, trigger["id"], "2026-11-22T00:00:00Z", "2026-11-24T00:00:00Z", claims=token_claims("victor", "[viewer]")
    )
    assert_error(as_viewer, 403, "forbidden")
    other_tenant = backfill(
        api,
        trigger["id"],
        "2026-11-22T00:00:00Z",
        "2026-11-24T00:00:00Z",
        claims=token_claims("eve", "[admin]", "evil"),
    )
    assert_error(other_tenant, 403, "forbidden")
    assert executions_of(stack) == []


def test_a_backfill_of_a_deleted_and_re_created_trigger_starts_the_new_incarnations_runs(
    api: ApiClient, stack: Stack
) -> None:
    stack.clock.set(datetime(2026, 11, 26, 15, 0, tzinfo=UTC))
    trigger = daily(api, id="report")
    first = backfill(api, "report", "2026-11-22T00:00:00Z", "2026-11-24T00:00:00Z").body["invocationIds"]
    assert api.request("DELETE", trigger_path(trigger["id"])).status == 204
    daily(api, id="report")
    second = backfill(api, "report", "2026-11-22T00:00:00Z", "2026-11-24T00:00:00Z").body
    assert second["started"] == 2
    assert set(second["invocationIds"]).isdisjoint(first)


# --- stepped: backfill and the overlap policy, backfill racing the dispatcher ------------------


@pytest.fixture
def env(clock: FakeClock) -> Iterator[DispatchEnv]:
    clock.set(AT - timedelta(minutes=30))
    with dispatch_env(clock) as env:
        yield env


def started(env: DispatchEnv, kind: str) -> list[ExecutionInput]:
    runs = [ExecutionInput.model_validate(execution["input"]) for execution in executions(env)]
    return sorted((run for run in runs if run.kind == kind), key=lambda run: run.scheduled_for)


def step_to_end(env: DispatchEnv, agent: runner.Agent, run: ExecutionInput) -> str:
    state = runner.prepare(env.deps, runner.PrepareEvent(input=run, execution_arn=f"arn:{run.invocation_id}"))
    while (state := runner.attempt(env.deps, agent, state)).outcome in ("retry", "waiting"):
        pass
    return state.outcome


def backfill_service(env: DispatchEnv, trigger_id: str, start: datetime, end: datetime) -> list[str]:
    request = BackfillRequest.model_validate({"from": iso(start), "to": iso(end)})
    return invocation_service.backfill(env.deps, EDITOR, PATH, trigger_id, request).invocation_ids


def test_skip_runs_the_earliest_of_a_backfill_and_skips_the_rest(env: DispatchEnv) -> None:
    trigger_id = create(env, cron_expression="*/5 * * * *", overlap_policy="skip")
    backfill_service(env, trigger_id, AT - timedelta(hours=2), AT - timedelta(hours=1, minutes=45))
    runs = started(env, "backfill")
    assert len(runs) == 3
    agent = RecordingAgent()
    prepared = [
        runner.prepare(env.deps, runner.PrepareEvent(input=run, execution_arn=f"arn:{run.invocation_id}"))
        for run in runs
    ]
    # All three wait no time (their instants are past) and reach Attempt together, the latest first.
    outcomes = [runner.attempt(env.deps, agent, state).outcome for state in reversed(prepared)]
    assert outcomes == ["skipped", "skipped", "completed"]
    assert [call.scheduled_for for call in agent.calls] == [runs[0].scheduled_for]


def test_a_backfill_and_the_dispatcher_run_the_same_instant_once_each_under_their_own_keys(
    env: DispatchEnv,
) -> None:
    """Backfilling an instant the schedule itself runs is a second, deliberate run: its own key, its own
    invocation; neither the backfill nor the tick starts either of them twice."""
    trigger_id = create(env, cron_expression="*/5 * * * *")
    env.clock.set(AT + timedelta(seconds=1))
    dispatcher(env).tick()
    backfill_service(env, trigger_id, AT, AT + timedelta(seconds=1))
    dispatcher(env).tick()
    backfill_service(env, trigger_id, AT, AT + timedelta(seconds=1))
    scheduled, backfilled = started(env, "scheduled"), started(env, "backfill")
    assert [run.scheduled_for for run in scheduled][:1] == [iso(AT)]
    assert [run.scheduled_for for run in backfilled] == [iso(AT)]
    incarnation = incarnation_of(trigger_id)
    assert backfilled[0].idempotency_key == naming.backfill_execution_name("acme", trigger_id, incarnation, AT)
    assert backfilled[0].invocation_id != scheduled[0].invocation_id
    agent = RecordingAgent()
    assert step_to_end(env, agent, backfilled[0]) == "completed"
    assert step_to_end(env, agent, scheduled[0]) == "completed"
    assert len(agent.calls) == 2


def test_backfilled_runs_count_no_max_runs_and_pause_nothing(env: DispatchEnv) -> None:
    trigger_id = create(env, cron_expression="*/5 * * * *", max_runs=2, pause_on_failure=True)
    backfill_service(env, trigger_id, AT - timedelta(hours=1), AT - timedelta(minutes=45))
    assert [step_to_end(env, RejectingAgent(), run) for run in started(env, "backfill")] == ["failed"] * 3
    record = stored(trigger_id)
    assert (int(record.runs_started or 0), record.enabled, record.paused_reason) == (0, True, None)


class RejectingAgent:
    def call(self, request: AgentRequest, timeout_seconds: float) -> AgentResult:
        return AgentResult(AttemptOutcome.REJECTED, 400, "HTTP 400", None)


def test_a_crash_between_recording_and_starting_a_backfill_run_is_healed_by_posting_again(
    env: DispatchEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger_id = create(env, cron_expression="0 9 * * *")
    calls: list[str] = []

    def crash(*_args: Any, **_kwargs: Any) -> bool:
        calls.append("start")
        raise RuntimeError("the API Lambda died")

    with monkeypatch.context() as patched:
        patched.setattr(invocation_service, "_start", crash)
        with pytest.raises(RuntimeError):
            backfill_service(env, trigger_id, AT - timedelta(days=2), AT - timedelta(days=1))
    assert started(env, "backfill") == []
    again = backfill_service(env, trigger_id, AT - timedelta(days=2), AT - timedelta(days=1))
    [run] = started(env, "backfill")
    assert [run.invocation_id] == again
    partition = invocation_partition("acme", trigger_id, incarnation_of(trigger_id))
    assert InvocationRecord.get(partition, run.invocation_id, consistent_read=True).status == "pending"


def test_a_thousand_occurrences_start_in_parallel_once_each(clock: FakeClock) -> None:
    """The most one request may backfill, started BACKFILL_CONCURRENCY at a time (moto serialised)."""
    clock.set(AT)
    with dispatch_env(clock, BACKFILL_CONCURRENCY=4) as env:
        trigger_id = create(env, cron_expression="*/5 * * * *")
        start = datetime(2026, 11, 22, tzinfo=UTC)
        ids = backfill_service(env, trigger_id, start, start + 1000 * FIVE_MINUTES)
        runs = started(env, "backfill")
        assert len(ids) == len(set(ids)) == len(runs) == 1000
        assert [run.scheduled_for for run in runs] == [iso(start + k * FIVE_MINUTES) for k in range(1000)]
        assert ids == [run.invocation_id for run in runs]


@pytest.mark.parametrize("disable", [False, True])
def test_a_run_waiting_for_another_stands_down_when_its_schedule_is_edited(env: DispatchEnv, disable: bool) -> None:
    """A waiting run has not started: disabling the trigger (or any schedule edit) supersedes it."""
    env.clock.set(AT - timedelta(minutes=3))
    trigger_id = create(env, cron_expression="*/5 * * * *", overlap_policy="buffer_one")
    invocation_service.run_now(env.deps, EDITOR, PATH, trigger_id, None)  # pending: an unfinished run
    env.clock.set(AT - timedelta(seconds=30))
    dispatcher(env).tick()
    [claimed] = started(env, "scheduled")
    env.clock.set(AT)
    agent = RecordingAgent()
    state = runner.prepare(env.deps, runner.PrepareEvent(input=claimed, execution_arn=f"arn:{claimed.invocation_id}"))
    state = runner.attempt(env.deps, agent, state)
    first = invocation_store.load("acme", trigger_id, incarnation_of(trigger_id), claimed.invocation_id)
    assert state.outcome == "waiting", first.error
    env.clock.set(AT + timedelta(seconds=5))
    if disable:
        update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch(enabled=False))
    looked = runner.attempt(env.deps, agent, state)
    record = invocation_store.load("acme", trigger_id, incarnation_of(trigger_id), claimed.invocation_id)
    if disable:
        assert (looked.outcome, record.status, record.error) == ("cancelled", "cancelled", runner.SUPERSEDED)
    else:
        assert (looked.outcome, record.status, looked.waiting_since) == ("waiting", "pending", iso(AT))
    assert agent.calls == []


def test_a_pause_on_failure_spares_an_occurrence_whose_start_had_passed(env: DispatchEnv) -> None:
    """A pause is an edit of `enabled`: a claimed occurrence already due when it lands still runs (as after
    a user's edit), one not yet due stands down. Found by the model: the due one was cancelled as
    superseded, neither run nor counted as missed."""
    env.clock.set(AT - timedelta(minutes=3))
    trigger_id = create(env, cron_expression="* * * * *", pause_on_failure=True, max_retries=1)
    env.clock.set(AT - timedelta(seconds=30))
    dispatcher(env).tick()
    env.clock.set(AT + timedelta(seconds=30))
    dispatcher(env).tick()
    dispatcher(env).tick()
    by_instant = {run.scheduled_for: run for run in started(env, "scheduled")}
    assert set(by_instant) >= {iso(AT), iso(AT + timedelta(minutes=1))}, sorted(by_instant)
    first, second = by_instant[iso(AT)], by_instant[iso(AT + timedelta(minutes=1))]
    prepared = [
        runner.prepare(env.deps, runner.PrepareEvent(input=run, execution_arn=f"arn:{run.invocation_id}"))
        for run in (first, second)
    ]
    env.clock.set(AT + timedelta(seconds=5))
    retry = runner.attempt(env.deps, FailingAgent(), prepared[0])
    assert retry.outcome == "retry"
    env.clock.set(AT + timedelta(minutes=1, seconds=10))  # the second occurrence's start has passed
    assert runner.attempt(env.deps, FailingAgent(), retry).outcome == "failed"
    assert stored(trigger_id).paused_reason is not None
    agent = RecordingAgent()
    assert runner.attempt(env.deps, agent, prepared[1]).outcome == "completed"
    assert [call.scheduled_for for call in agent.calls] == [iso(AT + timedelta(minutes=1))]


class FailingAgent:
    def call(self, request: AgentRequest, timeout_seconds: float) -> AgentResult:
        return AgentResult(AttemptOutcome.RETRYABLE_ERROR, 503, "HTTP 503", None)

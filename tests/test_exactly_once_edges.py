"""Exactly-once at the edges outside review found: incarnations, late starts, shard changes, edits at the instant.

Executions are recorded by moto without running; each test drives the runner's steps itself, in the
order the state machine would, with a clock it sets. One test per defect, named for the promise.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from sundial.adapters.agent_http import AgentRequest, AgentResult, AttemptOutcome
from sundial.contracts.api import TriggerCreate, TriggerPatch
from sundial.contracts.execution import ExecutionInput
from sundial.deps import SFN_CLIENT_CONFIG, Deps, _default_sfn_client
from sundial.domain.retry_policy import UNFINISHED_RETENTION, longest_run
from sundial.services import invocations, runner
from sundial.services.dispatcher import RESHARD_QUIET
from sundial.services.triggers import (
    agent_upcoming_runs,
    create_trigger,
    delete_trigger,
    get_trigger,
    list_triggers,
    update_trigger,
)
from sundial.store import invocations as invocation_store
from sundial.store.records import InvocationRecord, ShardMarkerRecord, TriggerRecord, due_shard_for

from tests.conftest import REGION, START, FakeClock, make_settings
from tests.dispatch_support import (
    EDITOR,
    PATH,
    DispatchEnv,
    SleepRecorder,
    create,
    dispatch_env,
    dispatcher,
    executions,
    stored,
    throttling,
)


@dataclass
class RecordingAgent:
    """The agent runtime: answers every call with success and remembers who called."""

    calls: list[AgentRequest] = field(default_factory=list)

    def call(self, request: AgentRequest, timeout_seconds: float) -> AgentResult:
        self.calls.append(request)
        return AgentResult(AttemptOutcome.SUCCEEDED, 200, None, None)

    def scheduled_for(self, trigger_id: str) -> list[str]:
        return [call.scheduled_for for call in self.calls if call.trigger_id == trigger_id]


@pytest.fixture
def env(clock: FakeClock) -> Iterator[DispatchEnv]:
    clock.set(START - timedelta(minutes=10))
    with dispatch_env(clock) as built:
        yield built


@pytest.fixture
def agent() -> RecordingAgent:
    return RecordingAgent()


def tick_at(env: DispatchEnv, seconds_from_start: float) -> None:
    env.clock.set(START + timedelta(seconds=seconds_from_start))
    dispatcher(env).tick()


def started(env: DispatchEnv, trigger_id: str) -> list[ExecutionInput]:
    """The executions started for a trigger, oldest occurrence first."""
    inputs = [ExecutionInput.model_validate(item["input"]) for item in executions(env)]
    return sorted((run for run in inputs if run.trigger_id == trigger_id), key=lambda run: run.scheduled_for)


def run_steps(env: DispatchEnv, agent: RecordingAgent, run: ExecutionInput, *, prepare_at: float | None = None) -> str:
    """Prepare (at `prepare_at`, default now), then Attempt at the clock's time; the invocation's final status."""
    now = env.clock.current
    if prepare_at is not None:
        env.clock.set(START + timedelta(seconds=prepare_at))
    arn = f"{env.state_machine_arn.replace(':stateMachine:', ':execution:')}:{run.idempotency_key}"
    state = runner.prepare(env.deps, runner.PrepareEvent(input=run, execution_arn=arn))
    env.clock.set(now)
    while (state := runner.attempt(env.deps, agent, state)).outcome == "retry":
        pass
    record = invocation_store.load(run.tenant_id, run.trigger_id, run.incarnation, run.invocation_id)
    return str(record.status)


def recreate(env: DispatchEnv, trigger_id: str, **fields: Any) -> None:
    delete_trigger(env.deps, EDITOR, PATH, trigger_id)
    create(env, id=trigger_id, **fields)


# --- 1. incarnations ---------------------------------------------------------------------------


def test_a_recreated_trigger_runs_an_occurrence_its_predecessor_had_claimed_once(
    env: DispatchEnv, agent: RecordingAgent
) -> None:
    create(env, id="daily", cron_expression="0 15 * * *")
    tick_at(env, -120)
    [old] = started(env, "daily")
    recreate(env, "daily", cron_expression="0 15 * * *")
    tick_at(env, -60)
    new = next(run for run in started(env, "daily") if run.incarnation != old.incarnation)

    env.clock.set(START)
    statuses = [run_steps(env, agent, old, prepare_at=-119), run_steps(env, agent, new, prepare_at=-59)]

    assert statuses == ["cancelled", "completed"]
    assert agent.scheduled_for("daily") == ["2026-11-26T15:00:00Z"]
    assert [call.invocation_id for call in agent.calls] == [new.invocation_id]


def test_a_recreated_one_time_trigger_never_runs_early_with_the_new_payload(
    env: DispatchEnv, agent: RecordingAgent
) -> None:
    create(env, id="once", run_at="2026-11-26T15:00:00Z", payload={"v": "old"})
    tick_at(env, -120)
    [old] = started(env, "once")
    recreate(env, "once", run_at="2026-11-26T18:00:00Z", payload={"v": "new"})

    env.clock.set(START)
    assert run_steps(env, agent, old, prepare_at=-119) == "cancelled"
    assert agent.calls == []
    row = stored("once")
    assert (row.enabled, row.next_run_at) == (True, START + timedelta(hours=3))

    tick_at(env, 3 * 3600 - 60)
    [new] = [run for run in started(env, "once") if run.incarnation == row.incarnation]
    env.clock.set(START + timedelta(hours=3))
    assert run_steps(env, agent, new) == "completed"
    assert [(call.scheduled_for, call.payload) for call in agent.calls] == [("2026-11-26T18:00:00Z", {"v": "new"})]


def test_a_recreated_trigger_shows_nothing_of_its_predecessor(env: DispatchEnv, agent: RecordingAgent) -> None:
    create(env, id="daily", cron_expression="0 15 * * *")
    tick_at(env, -120)
    [old] = started(env, "daily")
    env.clock.set(START)
    assert run_steps(env, agent, old, prepare_at=-119) == "completed"
    assert stored("daily").last_run_status == "completed"

    recreate(env, "daily", cron_expression="0 15 * * *")

    query = invocations.InvocationQuery(status=None, from_=None, to=None, limit=50, cursor=None)
    assert invocations.list_invocations(EDITOR, PATH, "daily", query).data == []
    with pytest.raises(Exception, match="not found"):
        invocations.get_invocation(EDITOR, PATH, "daily", old.invocation_id)
    shown = get_trigger(env.deps, EDITOR, PATH, "daily")
    assert (shown.last_run_at, shown.last_run_status) == (None, None)


def test_a_run_now_idempotency_key_does_not_reach_across_incarnations(env: DispatchEnv) -> None:
    create(env, id="daily", cron_expression="0 15 * * *")
    first = invocations.run_now(env.deps, EDITOR, PATH, "daily", "key-1")
    assert invocations.run_now(env.deps, EDITOR, PATH, "daily", "key-1") == first

    recreate(env, "daily", cron_expression="0 15 * * *")
    second = invocations.run_now(env.deps, EDITOR, PATH, "daily", "key-1")

    assert second.invocation_id != first.invocation_id
    assert second.execution_arn != first.execution_arn
    names = {item["name"] for item in executions(env)}
    assert {first.execution_arn.rsplit(":", 1)[1], second.execution_arn.rsplit(":", 1)[1]} <= names


# --- 2. late starts obey the missed-run rule on every path ---------------------------------------


@pytest.mark.parametrize(("window", "late_hours", "expected"), [(0, 3, "skipped"), (3600, 3, "skipped")])
def test_a_claim_redriven_hours_late_obeys_the_catch_up_window(
    env: DispatchEnv, agent: RecordingAgent, window: int, late_hours: int, expected: str
) -> None:
    trigger_id = create(env, cron_expression="0 15 * * *", catch_up_window_seconds=window)
    with throttling(env, {"StartExecution"}, times=10_000):
        tick_at(env, -120)  # claimed, but every start is throttled past its budget
    assert started(env, trigger_id) == []

    tick_at(env, late_hours * 3600)  # Step Functions is back: the expired claim is re-driven
    [late] = started(env, trigger_id)
    assert late.scheduled_for == "2026-11-26T15:00:00Z"

    assert run_steps(env, agent, late) == expected
    assert agent.calls == []
    assert stored(trigger_id).missed_runs_skipped == 1


def test_a_claim_redriven_within_its_window_runs(env: DispatchEnv, agent: RecordingAgent) -> None:
    trigger_id = create(env, cron_expression="0 15 * * *", catch_up_window_seconds=3600)
    with throttling(env, {"StartExecution"}, times=10_000):
        tick_at(env, -120)
    tick_at(env, 1800)
    [late] = started(env, trigger_id)

    assert run_steps(env, agent, late) == "completed"
    assert agent.scheduled_for(trigger_id) == ["2026-11-26T15:00:00Z"]
    assert stored(trigger_id).missed_runs_skipped == 0


@pytest.mark.parametrize("window", [0, 3600])
def test_runs_resumed_after_an_outage_run_only_the_latest_missed_occurrence(
    env: DispatchEnv, agent: RecordingAgent, window: int
) -> None:
    """The local stack was down for 150 s with three `* * * * *` runs claimed: one runs, two are skipped."""
    env.clock.set(START - timedelta(seconds=30))
    trigger_id = create(env, cron_expression="* * * * *", catch_up_window_seconds=window)
    for second in (-30, 30):  # the create claimed 15:00 at once; each tick claims the next minute
        tick_at(env, second)
    runs = started(env, trigger_id)
    assert [run.scheduled_for[11:16] for run in runs] == ["15:00", "15:01", "15:02"]

    env.clock.set(START + timedelta(seconds=160))  # 15:02:40: the three waits resume at once
    statuses = [run_steps(env, agent, run, prepare_at=30) for run in runs]

    assert statuses == ["skipped", "skipped", "completed"]
    assert agent.scheduled_for(trigger_id) == ["2026-11-26T15:02:00Z"]
    assert stored(trigger_id).missed_runs_skipped == 2


# --- 3. changing the shard count strands nothing ----------------------------------------------


def _deps_with_shards(env: DispatchEnv, shard_count: int) -> Deps:
    settings = make_settings(env.state_machine_arn, DUE_SHARD_COUNT=shard_count, DISPATCH_CONCURRENCY=4)
    return Deps(settings, clock=env.clock, sfn_factory=lambda: env.sfn)


def _tick_with(env: DispatchEnv, deps: Deps, seconds_from_start: float) -> None:
    env.clock.set(START + timedelta(seconds=seconds_from_start))
    dispatcher(env, deps=deps).tick()


@pytest.mark.parametrize(("before", "after"), [(16, 2), (2, 16), (16, 1)])
def test_changing_the_shard_count_strands_no_trigger(env: DispatchEnv, before: int, after: int) -> None:
    old, new = _deps_with_shards(env, before), _deps_with_shards(env, after)
    soon = [create_trigger(old, EDITOR, PATH, _daily(f"soon-{n}", "0 15 * * *")).id for n in range(12)]
    later = [create_trigger(old, EDITOR, PATH, _daily(f"later-{n}", "0 15 27 11 *")).id for n in range(12)]
    _tick_with(env, old, -600)  # an old-count tick leaves its marker

    _tick_with(env, new, -120)
    _tick_with(env, new, -60)
    dispatched = {run["input"]["triggerId"] for run in executions(env)}
    assert dispatched == set(soon)

    shards = {trigger_id: int(stored(trigger_id).due_shard) for trigger_id in soon + later}
    assert all(shard < after for shard in shards.values())
    if after < before:  # lowered: every row was moved to where the new count hashes it
        assert shards == {trigger_id: due_shard_for("acme", trigger_id, after) for trigger_id in shards}
    # The old shards are read until they have read empty for RESHARD_QUIET (the index may lag).
    assert _marker() == max(before, after)
    _tick_with(env, new, -60 + RESHARD_QUIET.total_seconds() + 30)
    assert _marker() == after

    _tick_with(env, new, 86_400 - 120)  # the next day: the far-off ones are found in their new shards
    dispatched = {run["input"]["triggerId"] for run in executions(env)}
    assert dispatched == set(soon) | set(later)


def test_a_row_the_api_wrote_under_a_count_no_dispatcher_used_is_still_read(env: DispatchEnv) -> None:
    """Raised to 8 and rolled back to 2 before any tick ran with 8: the API's rows in shards 2-7 are read."""
    wide, narrow = _deps_with_shards(env, 8), _deps_with_shards(env, 2)
    written = [create_trigger(wide, EDITOR, PATH, _daily(f"w-{n}", "0 15 * * *")).id for n in range(12)]
    assert any(int(stored(trigger_id).due_shard) >= 2 for trigger_id in written)

    _tick_with(env, narrow, -120)

    assert {run["input"]["triggerId"] for run in executions(env)} == set(written)


def _marker() -> int:
    return int(ShardMarkerRecord.get(ShardMarkerRecord.pk.default, consistent_read=True).shard_count)


def _daily(trigger_id: str, cron: str) -> TriggerCreate:
    return TriggerCreate.model_validate({"id": trigger_id, "name": trigger_id, "cronExpression": cron})


# --- 5. overlap `skip` sees every unfinished run ------------------------------------------------


def test_skip_counts_a_run_now_accepted_in_the_same_second_as_unfinished(
    env: DispatchEnv, agent: RecordingAgent
) -> None:
    trigger_id = create(env, cron_expression="0 15 * * *", overlap_policy="skip")
    tick_at(env, -120)
    [occurrence] = started(env, trigger_id)
    env.clock.set(START)
    invocations.run_now(env.deps, EDITOR, PATH, trigger_id, None)  # pending: its execution not yet begun

    assert run_steps(env, agent, occurrence, prepare_at=-119) == "skipped"
    assert agent.calls == []


def test_skip_reads_unfinished_runs_without_any_index(env: DispatchEnv, agent: RecordingAgent) -> None:
    """The overlap check and the delete's cancel read the register consistently: no Query is needed at all."""
    trigger_id = create(env, cron_expression="0 15 * * *", overlap_policy="skip")
    tick_at(env, -120)
    [occurrence] = started(env, trigger_id)
    env.clock.set(START)
    invocations.run_now(env.deps, EDITOR, PATH, trigger_id, None)
    queries: list[str] = []

    def no_index(model: Any, params: dict[str, Any], **_: Any) -> None:
        if model.name == "Query":
            queries.append(str(params.get("IndexName")))

    client = InvocationRecord._get_connection().connection.client
    client.meta.events.register("before-call.dynamodb.Query", no_index)
    try:
        assert run_steps(env, agent, occurrence, prepare_at=-119) == "skipped"
        delete_trigger(env.deps, EDITOR, PATH, trigger_id)
    finally:
        client.meta.events.unregister("before-call.dynamodb.Query", no_index)
    assert queries == []


# --- 6. the StartExecution budget counts every HTTP attempt -------------------------------------


def test_the_start_budget_counts_every_http_attempt(env: DispatchEnv) -> None:
    """Each try of the dispatcher's backoff is one HTTP request: the SDK's own retries are off."""
    sent: list[str] = []

    def throttled(request: Any, **_: Any) -> AWSResponse:
        sent.append(request.url)
        body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
        return AWSResponse(request.url, 400, {"x-amzn-query-error": "ThrottlingException"}, _Raw(body))  # type: ignore[arg-type]

    client = _default_sfn_client()
    assert client.meta.config.retries == SFN_CLIENT_CONFIG.retries  # type: ignore[attr-defined]
    client.meta.events.register("before-send.sfn.StartExecution", throttled)  # type: ignore[arg-type]
    clocked = SleepRecorder()
    retries: list[str] = []
    backoff = replace(dispatcher(env, sleep=clocked).start_backoff, on_retry=retries.append)
    budget = backoff.budget_seconds
    assert budget is not None

    with pytest.raises(client.exceptions.ClientError):
        backoff.call(lambda: client.start_execution(stateMachineArn=env.state_machine_arn, name="n", input="{}"))

    assert len(sent) == len(retries) + 1
    assert sum(clocked.delays) <= budget < env.settings.claim_lease_seconds


@dataclass
class _Raw:
    """A finished HTTP body, as botocore reads it from the connection."""

    data: bytes

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


def test_the_default_client_makes_one_attempt_with_short_timeouts() -> None:
    client = boto3.client("stepfunctions", region_name=REGION, config=SFN_CLIENT_CONFIG)
    config: Any = client.meta.config
    assert config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert (config.connect_timeout, config.read_timeout) == (3, 10)


# --- 12. nextRunAt shows the claimed occurrence ------------------------------------------------


def test_next_run_at_shows_the_claimed_occurrence_while_it_waits(env: DispatchEnv) -> None:
    create(env, id="daily", cron_expression="0 15 * * *")
    tick_at(env, -120)  # 14:58: claimed and started; the row's next_run_at is already tomorrow
    assert stored("daily").next_run_at == START + timedelta(days=1)

    shown = get_trigger(env.deps, EDITOR, PATH, "daily")
    assert shown.next_run_at == START
    assert shown.upcoming_runs[:2] == [START, START + timedelta(days=1)]
    assert shown.schedule_description
    assert agent_upcoming_runs(env.deps, EDITOR, PATH, 1).data[0].scheduled_for == START
    assert list_triggers(env.deps, EDITOR, "acme", "website", "reporter", 10, None).data[0].next_run_at == START

    env.clock.set(START + timedelta(seconds=1))
    assert get_trigger(env.deps, EDITOR, PATH, "daily").next_run_at == START + timedelta(days=1)


# --- 13. retention never ends a record while its run may go on ----------------------------------


def test_no_invocation_expires_while_its_run_may_still_go_on(clock: FakeClock) -> None:
    clock.set(START - timedelta(minutes=10))
    with dispatch_env(clock, INVOCATION_RETENTION_DAYS=1) as env:
        trigger_id = create(env, cron_expression="0 15 * * *", max_retries=10, retry_delay_seconds=3600)
        tick_at(env, -120)
        [run] = started(env, trigger_id)
        runner.prepare(env.deps, runner.PrepareEvent(input=run, execution_arn="arn:x"))
        record = invocation_store.load(run.tenant_id, run.trigger_id, run.incarnation, run.invocation_id)

        assert longest_run() < UNFINISHED_RETENTION
        assert record.expires_at is not None
        assert record.expires_at >= record.created_at + longest_run()

        env.clock.set(START + longest_run())
        assert invocation_store.finish(env.deps, record, "failed", "gave up")
        record.refresh()
        assert record.expires_at == START + longest_run() + timedelta(days=1)


# --- 14. an edit at the instant ----------------------------------------------------------------


def test_an_edit_after_an_occurrences_instant_does_not_cancel_it(env: DispatchEnv, agent: RecordingAgent) -> None:
    trigger_id = create(env, cron_expression="0 15 * * *")
    tick_at(env, -120)
    [claimed] = started(env, trigger_id)
    env.clock.set(START + timedelta(seconds=1))  # the instant passed; the Attempt has not come yet
    update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch.model_validate({"cronExpression": "30 15 * * *"}))
    assert stored(trigger_id).next_run_at == START + timedelta(minutes=30)

    env.clock.set(START + timedelta(seconds=2))
    assert run_steps(env, agent, claimed, prepare_at=-119) == "completed"
    assert agent.scheduled_for(trigger_id) == ["2026-11-26T15:00:00Z"]


def test_an_edit_before_an_occurrences_instant_supersedes_it(env: DispatchEnv, agent: RecordingAgent) -> None:
    trigger_id = create(env, cron_expression="0 15 * * *")
    tick_at(env, -120)
    [claimed] = started(env, trigger_id)
    env.clock.set(START - timedelta(seconds=30))
    update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch.model_validate({"cronExpression": "30 15 * * *"}))

    env.clock.set(START)
    assert run_steps(env, agent, claimed, prepare_at=-119) == "cancelled"
    assert agent.calls == []
    assert TriggerRecord.get(stored(trigger_id).pk).version_ends == {"1": "2026-11-26T14:59:30Z"}

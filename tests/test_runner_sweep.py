"""The sweep closes what a lost execution-status event left open, and nothing else (SPEC §9)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sundial.contracts.execution import ExecutionInput
from sundial.services import runner, sweep
from sundial.store import invocations as invocation_store
from sundial.store.records import InvocationRecord

from tests.conftest import START, FakeClock
from tests.dispatch_support import DispatchEnv, create, dispatch_env, dispatcher, executions, stored
from tests.template_support import recorded_aws_calls, transform_template
from tests.test_function_grants import assert_granted_exactly, tables


@pytest.fixture
def env(clock: FakeClock) -> Iterator[DispatchEnv]:
    clock.set(START - timedelta(minutes=10))
    with dispatch_env(clock) as built:
        yield built


def prepared_run(env: DispatchEnv, trigger_id: str, **fields: Any) -> tuple[ExecutionInput, str]:
    """A claimed occurrence whose execution is running and whose Prepare recorded it pending."""
    create(env, id=trigger_id, cron_expression="0 15 * * *", **fields)
    env.clock.set(START - timedelta(seconds=120))
    dispatcher(env).tick()
    [started] = [item for item in executions(env) if item["input"]["triggerId"] == trigger_id]
    run = ExecutionInput.model_validate(started["input"])
    arn = f"{env.state_machine_arn.replace(':stateMachine:', ':execution:')}:{started['name']}"
    runner.prepare(env.deps, runner.PrepareEvent(input=run, execution_arn=arn))
    return run, arn


def status_of(run: ExecutionInput) -> tuple[str, str | None]:
    record = invocation_store.load(run.tenant_id, run.trigger_id, run.incarnation, run.invocation_id)
    return record.status, record.error


def test_a_run_whose_stopped_event_was_lost_is_closed_by_the_sweep(env: DispatchEnv) -> None:
    """Stopped in the console; the watcher never hears of it. The sweep closes it as the watcher would."""
    run, arn = prepared_run(env, "lost-event", overlap_policy="skip")
    env.sfn.stop_execution(executionArn=arn, cause="stopped in the console")
    env.clock.set(START + sweep.SWEEP_GRACE)

    report = sweep.sweep(env.deps)

    assert report.closed == [run.invocation_id]
    assert status_of(run) == ("cancelled", runner.EXECUTION_STOPPED)
    assert invocation_store.open_invocations(run.tenant_id, run.trigger_id, run.incarnation) == []
    assert sweep.sweep(env.deps).closed == [], "a second pass finds nothing more to do"


def orphan_run(env: DispatchEnv, trigger_id: str) -> InvocationRecord:
    """A run-now's record written, then the process died before StartExecution: it would block `skip` for good."""
    create(env, id=trigger_id, cron_expression="0 15 * * *", overlap_policy="skip")
    record = invocation_store.new_invocation(
        env.deps,
        tenant_id="acme",
        project_id="website",
        agent_id="reporter",
        trigger_id=trigger_id,
        incarnation=stored(trigger_id).incarnation,
        kind="manual",
        invocation_id="20261126T144000Z-00000000000000000001",
        idempotency_key="manual:orphan",
        scheduled_for=env.clock(),
        ref="main",
        execution_name="manual-orphan-never-started",
    )
    assert invocation_store.put_if_absent(env.deps, record)
    return record


def test_a_run_whose_execution_never_started_is_closed_as_failed(env: DispatchEnv) -> None:
    record = orphan_run(env, "never-started")
    trigger_id, incarnation = record.trigger_id, record.incarnation
    env.clock.set(env.clock() + sweep.SWEEP_GRACE + timedelta(seconds=1))

    assert sweep.sweep(env.deps).closed == [record.invocation_id]
    closed = invocation_store.load("acme", trigger_id, incarnation, record.invocation_id)
    assert (closed.status, closed.error) == ("failed", f"{sweep.NEVER_STARTED}: its execution never started")


def test_running_and_young_runs_are_left_alone(env: DispatchEnv) -> None:
    run, _arn = prepared_run(env, "still-running")
    assert sweep.sweep(env.deps).looked_at == 0, "younger than the grace: not even asked about"
    env.clock.set(START + timedelta(hours=3))

    report = sweep.sweep(env.deps)

    assert (report.looked_at, report.closed) == (1, [])
    assert status_of(run) == ("pending", None)


def test_the_sweep_is_granted_exactly_what_it_uses(env: DispatchEnv) -> None:
    """A stopped run (cancelled) and a run that never started (failed, shown on its trigger)."""
    orphan = orphan_run(env, "orphan")
    run, arn = prepared_run(env, "granted")
    env.sfn.stop_execution(executionArn=arn, cause="stopped")
    env.clock.set(START + timedelta(hours=1))
    with recorded_aws_calls(tables(env), env.state_machine_arn) as calls:
        assert sorted(sweep.sweep(env.deps).closed) == sorted([run.invocation_id, orphan.invocation_id])
    assert_granted_exactly(transform_template(), "RunnerSweepFunctionRole", calls)


def test_one_run_that_cannot_be_looked_at_does_not_stop_the_pass(
    env: DispatchEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    stopped = []
    for name in ("first", "second", "third"):
        run, arn = prepared_run(env, name)
        env.sfn.stop_execution(executionArn=arn, cause="stopped")
        stopped.append((run, arn))
    broken_arn = stopped[1][1]
    describe = env.sfn.describe_execution

    def refusing(**kwargs: Any) -> Any:
        if kwargs["executionArn"] == broken_arn:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "denied"}}, "DescribeExecution")
        return describe(**kwargs)

    monkeypatch.setattr(env.sfn, "describe_execution", refusing)
    env.clock.set(START + timedelta(hours=1))

    report = sweep.sweep(env.deps)

    assert (report.errors, sorted(report.closed)) == (
        1,
        sorted([stopped[0][0].invocation_id, stopped[2][0].invocation_id]),
    )
    assert status_of(stopped[1][0]) == ("pending", None), "left for the next pass"


def test_a_pass_short_of_time_stops_early_and_starts_elsewhere_next_time(env: DispatchEnv) -> None:
    run, arn = prepared_run(env, "later")
    env.sfn.stop_execution(executionArn=arn, cause="stopped")
    env.clock.set(START + timedelta(hours=1))

    short = sweep.sweep(env.deps, remaining_seconds=lambda: sweep.TIME_MARGIN_SECONDS - 1)
    assert (short.stopped_early, short.looked_at, short.closed) == (True, 0, [])
    assert sweep.sweep(env.deps).closed == [run.invocation_id]


def test_a_finished_run_leaves_its_register_out_of_the_sweep(env: DispatchEnv) -> None:
    """The register stays (empty) until TTL; the index shows it holds nothing, so it is not read."""
    run, _arn = prepared_run(env, "done")
    record = invocation_store.load(run.tenant_id, run.trigger_id, run.incarnation, run.invocation_id)
    assert invocation_store.finish(env.deps, record, "completed")
    assert list(invocation_store.registered_partitions()) == []

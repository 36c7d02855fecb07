"""The dispatcher's and the runner steps' IAM roles grant exactly what their code calls.

Each function's paths run against moto with every AWS call recorded, and the recording is compared
with the role in the transformed template, both ways: a call without a grant fails in AWS, a grant
without a call is more privilege than the function needs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from unittest import mock

import pytest
from sundial.adapters.agent_http import AgentRequest, AgentResult, AttemptOutcome
from sundial.contracts.execution import ExecutionInput
from sundial.deps import Deps
from sundial.domain.auth import Principal
from sundial.domain.cascade import CascadeScope
from sundial.services import cascades, invocations, runner

from tests.conftest import EVENTS, START, FakeClock, lambda_context, make_settings
from tests.dispatch_support import EDITOR, PATH, DispatchEnv, create, dispatch_env, dispatcher, executions
from tests.template_support import granted, recorded_aws_calls, transform_template


class SucceedingAgent:
    def call(self, request: AgentRequest, timeout_seconds: float) -> AgentResult:
        return AgentResult(AttemptOutcome.SUCCEEDED, 200)


@pytest.fixture(scope="module")
def transformed() -> dict[str, Any]:
    return transform_template()


@pytest.fixture
def env(clock: FakeClock) -> Iterator[DispatchEnv]:
    clock.set(START - timedelta(minutes=10))
    with dispatch_env(clock) as built:
        yield built


def tables(env: DispatchEnv) -> dict[str, str]:
    return {env.settings.triggers_table: "TriggersTable", env.settings.invocations_table: "InvocationsTable"}


def assert_granted_exactly(
    transformed: dict[str, Any],
    role: str,
    calls: set[tuple[str, str]],
    unexercised: frozenset[tuple[str, str]] = frozenset(),
) -> None:
    """`unexercised`: grants these paths do not reach, named so that nothing else can hide among them."""
    allowed = granted(transformed, role) - unexercised
    assert calls - allowed == set(), f"{role}: calls AWS without permission"
    assert allowed - calls == set(), f"{role}: granted more than its code uses"


def test_the_dispatcher_is_granted_exactly_what_it_uses(env: DispatchEnv, transformed: dict[str, Any]) -> None:
    """A first tick (raises the shard marker), claims and starts, then a tick that re-shards after a lowered count."""
    for number in range(6):
        create(env, id=f"t{number}", cron_expression="0 15 * * *" if number % 2 else "0 15 27 11 *")
    smaller = Deps(
        make_settings(env.state_machine_arn, DUE_SHARD_COUNT=1), clock=env.clock, sfn_factory=lambda: env.sfn
    )
    with recorded_aws_calls(tables(env), env.state_machine_arn) as calls:
        env.clock.set(START - timedelta(seconds=120))
        dispatcher(env).tick()
        dispatcher(env, deps=smaller).tick()
        dispatcher(env, deps=smaller).tick()
    assert executions(env)
    assert_granted_exactly(transformed, "DispatchFunctionRole", calls)


def _scheduled_run(env: DispatchEnv) -> ExecutionInput:
    create(env, id="daily", cron_expression="0 15 * * *", overlap_policy="skip")
    env.clock.set(START - timedelta(seconds=120))
    dispatcher(env).tick()
    [started] = executions(env)
    return ExecutionInput.model_validate(started["input"])


def test_each_runner_step_is_granted_exactly_what_it_uses(env: DispatchEnv, transformed: dict[str, Any]) -> None:
    """Prepare, Attempt (overlap check, a skipped and a completed run) and Finalize, each against its own role."""
    run = _scheduled_run(env)
    event = runner.PrepareEvent(input=run, execution_arn=f"arn:aws:states:::execution:runner:{run.idempotency_key}")
    with recorded_aws_calls(tables(env), env.state_machine_arn) as prepare_calls:
        state = runner.prepare(env.deps, event)
        assert runner.prepare(env.deps, event) == state  # a retried Task finds the record it made
    assert_granted_exactly(transformed, "RunnerPrepareFunctionRole", prepare_calls)

    env.clock.set(START)
    accepted = invocations.run_now(env.deps, EDITOR, PATH, "daily", None)
    manual = invocations.execution_input(
        runner.invocation_store.load("acme", "daily", run.incarnation, accepted.invocation_id)
    )
    with recorded_aws_calls(tables(env), env.state_machine_arn) as attempt_calls:
        assert runner.attempt(env.deps, SucceedingAgent(), state).outcome == "skipped"
        manual_state = runner.RunState(**manual.model_dump())
        assert runner.attempt(env.deps, SucceedingAgent(), manual_state).outcome == "completed"
    token = frozenset({("secretsmanager:GetSecretValue", "AgentRunTokenSecretArn")})  # the agent here needs none
    assert_granted_exactly(transformed, "RunnerAttemptFunctionRole", attempt_calls, unexercised=token)

    broken = runner.RunState(**run.model_dump(), failure={"Error": "Lambda.Unknown", "Cause": "out of memory"})
    broken = broken.model_copy(update={"invocation_id": "20261126T150000Z-00000000000000000000"})
    with recorded_aws_calls(tables(env), env.state_machine_arn) as finalize_calls:
        assert runner.finalize(env.deps, broken).outcome == "failed"
    assert_granted_exactly(transformed, "RunnerFinalizeFunctionRole", finalize_calls)


def test_the_cascade_step_is_granted_exactly_what_it_uses(env: DispatchEnv, transformed: dict[str, Any]) -> None:
    """Pages by project (by_project) and by runAs user (by_run_as), cancelling a run and stopping its execution."""
    admin = Principal("carol", "acme", frozenset({"admin"}))
    create(env, id="mine", cron_expression="0 15 * * *", run_as_user_id="alice")
    create(env, id="other", cron_expression="0 15 * * *")
    invocations.run_now(env.deps, EDITOR, PATH, "mine", None)
    invocations.run_now(env.deps, EDITOR, PATH, "other", None)
    accepted = [
        cascades.request(env.deps, admin, scope, None).cascade_id
        for scope in (CascadeScope.user("acme", "alice"), CascadeScope.project("acme", "website"))
    ]
    with recorded_aws_calls(tables(env), env.state_machine_arn) as calls:
        for cascade_id in accepted:
            step = cascades.CascadeStep(tenant_id="acme", cascade_id=cascade_id)
            while not step.done:
                step = cascades.page(env.deps, step, time_left=lambda: 900.0)
    token = frozenset({("secretsmanager:GetSecretValue", "AgentRunTokenSecretArn")})  # tells no agent here
    assert_granted_exactly(transformed, "CascadeFunctionRole", calls, unexercised=token)
    assert [
        execution["status"]
        for execution in env.sfn.list_executions(stateMachineArn=env.state_machine_arn)["executions"]
    ] == ["ABORTED", "ABORTED"]


def test_the_platform_events_function_is_granted_exactly_what_it_uses(
    env: DispatchEnv, transformed: dict[str, Any]
) -> None:
    """A new event's cascade (record, tombstone, execution), then the same event again."""
    import cascade_handler

    event = json.loads((EVENTS / "platform_agent_deleted.json").read_text())
    cascade_state_machine = env.deps.settings.cascade_state_machine_arn
    with (
        mock.patch.object(cascade_handler, "deps", return_value=env.deps),
        recorded_aws_calls(tables(env), env.state_machine_arn, cascade_state_machine) as calls,
    ):
        for _ in range(2):
            cascade_handler.platform_event_handler(event, lambda_context("sundial-platform-events"))
    # Lambda itself, not the code, sends a failed event to the dead-letter queue.
    lambda_sends = frozenset({("sqs:SendMessage", "PlatformEventsDeadLetterQueue")})
    assert_granted_exactly(transformed, "PlatformEventsFunctionRole", calls, unexercised=lambda_sends)

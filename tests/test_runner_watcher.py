"""The watcher: an execution that ends outside the state machine's own paths still gets its invocation closed.

Step Functions sends "Step Functions Execution Status Change" events to EventBridge; moto does
not, so each test builds the event from DescribeExecution (tests.runner_support.status_change_event)
and hands it to the watcher's handler, as the EventBridge rule in template.yaml would.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import runner_handler
from sundial.services import runner
from sundial.store.records import InvocationRecord, TriggerRecord, invocation_partition, trigger_pk

from sundial_local.invoke import adopt_sample_incarnation
from sundial_local.template import resource
from tests.api_support import registered_open
from tests.conftest import BASE, EVENTS, ApiClient, Stack, lambda_context
from tests.runner_support import Harness, Reply, Run, create_trigger, runner_harness, status_change_event, trigger_of
from tests.template_support import granted, recorded_aws_calls, transform_template

AT = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)
AT_TEXT = "2026-11-26T16:00:00Z"
SAMPLE = EVENTS / "runner_execution_ended.json"


@pytest.fixture
def harness(stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with runner_harness(stack, monkeypatch) as harness:
        yield harness


def watch(event: dict[str, Any]) -> dict[str, Any]:
    """Deliver the event to the watcher as Lambda would."""
    context = lambda_context("sundial-runner-watcher")
    result: dict[str, Any] = runner_handler.execution_ended_handler(event, context)
    return result


def create(api: ApiClient, **fields: Any) -> dict[str, Any]:
    return create_trigger(api, **{"cronExpression": "0 * * * *", **fields})


def stop_from_the_console(harness: Harness) -> Any:
    """A Wait hook that stops the execution as an operator would: nothing in the run hears of it."""

    def stop(execution_arn: str) -> None:
        harness.stack.sfn.stop_execution(executionArn=execution_arn, cause="stopped from the console")

    return stop


def stopped_run(harness: Harness, trigger_id: str, state: str, at: datetime = AT) -> Run:
    harness.waits.hooks[state] = stop_from_the_console(harness)
    run = harness.run_scheduled("acme", trigger_id, at)
    del harness.waits.hooks[state]
    assert run.status == "ABORTED"
    return run


def test_the_sample_event_is_what_the_watcher_gets_for_a_stopped_execution(harness: Harness, api: ApiClient) -> None:
    """events/runner_execution_ended.json has the shape of the events built from DescribeExecution here."""
    run = stopped_run(harness, create(api)["id"], "WaitUntilScheduled")
    built = status_change_event(run.described)
    sample = json.loads(SAMPLE.read_text())

    assert set(sample) == set(built)
    assert set(sample["detail"]) == set(built["detail"])
    assert {key: sample[key] for key in ("source", "detail-type")} == {
        key: built[key] for key in ("source", "detail-type")
    }
    assert sample["detail"]["status"] == built["detail"]["status"] == "ABORTED"
    assert set(json.loads(sample["detail"]["input"])) == set(json.loads(built["detail"]["input"]))


def test_an_execution_stopped_mid_run_is_recorded_as_cancelled(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, maxRetries=3)
    harness.agent.then(Reply(503))
    run = stopped_run(harness, trigger["id"], "Backoff")
    assert run.invocation().status == "running", "nothing in the run recorded the stop"
    event = status_change_event(run.described)

    assert watch(event) == {"invocationId": run.invocation_id, "status": "cancelled", "closed": True}
    record = run.invocation()
    assert (record.status, record.error, record.completed_at) == ("cancelled", "execution stopped", AT)
    assert [entry["outcome"] for entry in record.attempts] == ["retryable_error"]
    assert not registered_open(record)
    shown = trigger_of(api, trigger["id"])
    assert (shown["enabled"], shown["lastRunStatus"]) == (True, None)
    # EventBridge delivers at least once: a repeat changes nothing.
    assert watch(event) == {"invocationId": run.invocation_id, "status": "cancelled", "closed": False}


def test_a_skip_trigger_runs_again_once_its_stopped_run_is_closed(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, overlapPolicy="skip")
    first = stopped_run(harness, trigger["id"], "WaitUntilScheduled")
    assert first.invocation().status == "pending"

    assert watch(status_change_event(first.described))["closed"] is True
    second = harness.run_scheduled("acme", trigger["id"], AT + timedelta(hours=1))

    assert (first.invocation().status, second.invocation().status) == ("cancelled", "completed")
    assert len(harness.agent.received) == 1
    assert trigger_of(api, trigger["id"])["lastRunStatus"] == "completed"


def raises(message: str) -> Any:
    def broken(*_args: Any) -> runner.RunState:
        raise RuntimeError(message)

    return broken


def test_a_run_whose_finalize_broke_too_is_recorded_as_failed(
    harness: Harness, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = create(api)
    monkeypatch.setattr(runner, "attempt", raises("DynamoDB is unreachable"))
    monkeypatch.setattr(runner, "finalize", raises("DynamoDB is still unreachable"))
    run = harness.run_scheduled("acme", trigger["id"], AT)
    assert (run.status, run.described["error"]) == ("FAILED", "SundialRunnerError")
    assert run.invocation().status == "pending"

    assert watch(status_change_event(run.described))["status"] == "failed"
    record = run.invocation()
    assert (record.status, record.error) == ("failed", "SundialRunnerError: DynamoDB is unreachable")
    shown = trigger_of(api, trigger["id"])
    assert (shown["lastRunAt"], shown["lastRunStatus"], shown["enabled"]) == (AT_TEXT, "failed", True)


def test_a_run_that_ended_on_its_own_path_is_left_as_it_is(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, maxRetries=0)
    harness.agent.then(Reply(400, {"error": "bad message"}))
    run = harness.run_scheduled("acme", trigger["id"], AT)
    assert (run.status, run.described["error"]) == ("FAILED", "AgentRunFailed")
    before = TriggerRecord.get(trigger_pk("acme", trigger["id"]))
    harness.stack.clock.advance(60)

    assert watch(status_change_event(run.described)) == {
        "invocationId": run.invocation_id,
        "status": "failed",
        "closed": False,
    }
    assert run.invocation().error == 'HTTP 400: {"error": "bad message"}'
    after = TriggerRecord.get(trigger_pk("acme", trigger["id"]))
    assert (after.revision, after.updated_at, after.last_run_at) == (before.revision, before.updated_at, AT)


@pytest.mark.parametrize(
    ("status", "error", "cause", "closed_as", "recorded_error", "last_run"),
    [
        ("ABORTED", None, None, "cancelled", "execution stopped", None),
        ("TIMED_OUT", None, None, "failed", "States.Timeout: the execution timed out", "failed"),
        (
            "FAILED",
            "States.Runtime",
            "The state 'Route' failed",
            "failed",
            "States.Runtime: The state 'Route' failed",
            "failed",
        ),
    ],
)
def test_a_one_time_occurrence_closed_by_the_watcher_is_used_up(
    harness: Harness,
    api: ApiClient,
    status: str,
    error: str | None,
    cause: str | None,
    closed_as: str,
    recorded_error: str,
    last_run: str | None,
) -> None:
    trigger = create(api, cronExpression=None, runAt=AT_TEXT)
    run = stopped_run(harness, trigger["id"], "WaitUntilScheduled")
    event = status_change_event(run.described)
    event["detail"].update(status=status, error=error, cause=cause)

    assert watch(event)["status"] == closed_as
    assert (run.invocation().status, run.invocation().error) == (closed_as, recorded_error)
    shown = trigger_of(api, trigger["id"])
    assert (shown["enabled"], shown["nextRunAt"], shown["lastRunStatus"]) == (False, None, last_run)
    assert TriggerRecord.get(trigger_pk("acme", trigger["id"])).schedule_version == 2


def sample_event() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SAMPLE.read_text())
    return loaded


def sample_invocation() -> InvocationRecord:
    run = json.loads(sample_event()["detail"]["input"])
    partition = invocation_partition(run["tenantId"], run["triggerId"], run["incarnation"])
    return InvocationRecord.get(partition, run["invocationId"])


@pytest.fixture
def sample_trigger(stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """The trigger the sample event's execution ran for (events/api_create_trigger.json)."""
    body = json.loads(json.loads((EVENTS / "api_create_trigger.json").read_text())["body"])
    assert api.request("POST", BASE, body).status == 201
    adopt_sample_incarnation(stack.dynamodb, stack.settings.triggers_table)
    monkeypatch.setattr(runner_handler, "deps", lambda: stack.deps)


def test_an_execution_stopped_before_prepare_still_leaves_a_record(sample_trigger: None, stack: Stack) -> None:
    """Prepare may still be in flight when the stop lands: the record is made final first, so it cannot linger."""
    event = sample_event()
    watch(event)

    record = sample_invocation()
    assert (record.status, record.error, record.kind) == ("cancelled", "execution stopped", "scheduled")
    assert record.execution_arn == event["detail"]["executionArn"]
    prepared = runner.prepare(
        stack.deps,
        runner.PrepareEvent.model_validate(
            {"input": json.loads(event["detail"]["input"]), "executionArn": event["detail"]["executionArn"]}
        ),
    )
    assert prepared.invocation_id == record.invocation_id
    assert sample_invocation().status == "cancelled"


def test_the_watcher_is_subscribed_to_the_runner_executions_that_end_badly() -> None:
    properties = resource("RunnerWatcherFunction")["Properties"]
    assert properties["Handler"] == "runner_handler.execution_ended_handler"
    [subscription] = properties["Events"].values()
    assert subscription["Type"] == "EventBridgeRule"
    assert subscription["Properties"]["Pattern"] == {
        "source": ["aws.states"],
        "detail-type": ["Step Functions Execution Status Change"],
        "detail": {
            "status": ["FAILED", "TIMED_OUT", "ABORTED"],
            "stateMachineArn": [{"Ref": "RunnerStateMachine"}],
        },
    }
    substitutions = resource("RunnerStateMachine")["Properties"]["DefinitionSubstitutions"]
    assert "RunnerWatcherFunction" not in json.dumps(substitutions), "the state machine must not depend on it"


def test_the_watcher_is_granted_exactly_what_it_uses(
    sample_trigger: None, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every AWS call of the watcher's paths (create the missing record, fail it, update the trigger) vs. its role."""
    tables = {stack.settings.triggers_table: "TriggersTable", stack.settings.invocations_table: "InvocationsTable"}
    failed = copy.deepcopy(sample_event())
    failed["detail"].update(status="FAILED", error="States.Runtime", cause="broken")
    with recorded_aws_calls(tables, stack.settings.state_machine_arn) as calls:
        watch(failed)
    used = set(calls)
    assert sample_invocation().status == "failed"
    assert trigger_of(ApiClient(), "weekday-report")["lastRunStatus"] == "failed"

    granted_actions = granted(transform_template(), "RunnerWatcherFunctionRole")
    assert used - granted_actions == set(), "the watcher calls AWS without permission"
    assert granted_actions - used == set(), "the watcher is granted more than it uses"

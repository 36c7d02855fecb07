"""Every invocation that ends publishes one "Sundial Invocation Finished" event (SPEC §5, run events).

The events go to moto's EventBridge, where a rule routes them to an SQS queue the test reads, as a
user's rule would route failures to a queue or a chat.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from sundial.adapters.run_events import RunEvents
from sundial.contracts.events import INVOCATION_FINISHED, RUN_EVENTS_SOURCE, InvocationFinished
from sundial.store import invocations as invocation_store

from tests.api_support import incarnation_of
from tests.conftest import BASE, REGION, TEST_RUN_EVENTS_BUS, ApiClient, Stack
from tests.runner_support import Harness, Reply, create_trigger, runner_harness, wait_for_execution

AT = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)


@pytest.fixture
def harness(stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with runner_harness(stack, monkeypatch) as harness:
        yield harness


@pytest.fixture
def received(stack: Stack) -> Any:
    """A queue subscribed to Sundial's events on the bus; returns a function that drains it."""
    sqs = boto3.client("sqs", region_name=REGION)
    events = boto3.client("events", region_name=REGION)
    queue = sqs.create_queue(QueueName="sundial-run-events")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(
        Name="sundial-run-events",
        EventBusName=TEST_RUN_EVENTS_BUS,
        EventPattern=json.dumps({"source": [RUN_EVENTS_SOURCE], "detail-type": [INVOCATION_FINISHED]}),
    )
    events.put_targets(
        Rule="sundial-run-events", EventBusName=TEST_RUN_EVENTS_BUS, Targets=[{"Id": "queue", "Arn": queue_arn}]
    )

    def drain() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        while True:
            messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            if not messages:
                return found
            for message in messages:
                found.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])

    return drain


def test_a_scheduled_run_that_ends_publishes_its_outcome(harness: Harness, api: ApiClient, received: Any) -> None:
    trigger = create_trigger(api, cronExpression="0 16 * * *", maxRetries=1, retryDelaySeconds=10)
    harness.agent.then(Reply(503), Reply(200, {"conversationId": "c-1"}))
    run = harness.run_scheduled("acme", trigger["id"], AT)

    [event] = received()
    assert (event["source"], event["detail-type"]) == ("sundial", "Sundial Invocation Finished")
    assert event["detail"] == {
        "schemaVersion": "1",
        "tenantId": "acme",
        "projectId": "website",
        "agentId": "reporter",
        "triggerId": trigger["id"],
        "incarnation": run.incarnation,
        "invocationId": run.invocation_id,
        "kind": "scheduled",
        "status": "completed",
        "scheduledFor": "2026-11-26T16:00:00Z",
        "completedAt": "2026-11-26T16:00:00Z",
        "attempts": 2,
        "error": None,
        "rerunOf": None,
    }
    InvocationFinished.model_validate(event["detail"])  # the documented schema reads it back


def test_a_cancel_and_a_failed_run_now_each_publish_once(harness: Harness, api: ApiClient, received: Any) -> None:
    """A cancel landing during the agent call announces `cancelled`; the late success announces nothing."""
    trigger = create_trigger(api, cronExpression="0 16 * * *", maxRetries=0)
    harness.agent.then(Reply(400, {"error": "bad prompt"}))
    failed = api.request("POST", f"{BASE}/{trigger['id']}/run")
    wait_for_execution(harness.stack.sfn, failed.body["executionArn"])

    def cancel_during_call() -> None:
        [open_run] = invocation_store.open_invocations("acme", trigger["id"], incarnation_of(trigger["id"]))
        path = f"{BASE}/{trigger['id']}/invocations/{open_run.invocation_id}/cancel"
        assert api.request("POST", path).status == 200
        assert api.request("POST", path).status == 200  # cancelled stays cancelled: nothing new to announce

    harness.agent.then(Reply(200, {"conversationId": "late"}, action=cancel_during_call))
    run = harness.run_scheduled("acme", trigger["id"], AT)
    assert run.invocation().status == "cancelled"

    details = sorted((event["detail"] for event in received()), key=lambda detail: detail["kind"])
    assert [(detail["kind"], detail["status"], detail["error"]) for detail in details] == [
        ("manual", "failed", 'HTTP 400: {"error": "bad prompt"}'),
        ("scheduled", "cancelled", "cancelled by request"),
    ]


def test_without_a_bus_the_event_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    """The local stack's default: it shows every run's end in its log instead."""

    def no_client() -> Any:
        raise AssertionError("no bus: EventBridge is not called")

    detail = InvocationFinished(
        tenant_id="acme",
        project_id="website",
        agent_id="reporter",
        trigger_id="t1",
        incarnation="i1",
        invocation_id="20261126T160000Z-00000000000000000000",
        kind="scheduled",
        status="failed",
        scheduled_for="2026-11-26T16:00:00Z",
        completed_at="2026-11-26T16:00:05Z",
        attempts=1,
        error="HTTP 500",
        rerun_of=None,
    )
    with caplog.at_level(logging.INFO, logger="sundial.adapters.run_events"):
        RunEvents("", no_client).finished(detail)
    assert f"run finished: {detail.to_json()}" in caplog.text


def test_a_run_whose_deregistration_fails_is_still_announced_and_shown(
    harness: Harness, api: ApiClient, received: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The end is stored first; a failure to take the id out of the register must not lose what follows."""
    register = invocation_store._register

    def failing_once(deps: Any, partition: str, invocation_id: str, *, add: bool) -> None:
        if not add and not failed:
            failed.append(invocation_id)
            raise RuntimeError("throttled beyond every retry")
        register(deps, partition, invocation_id, add=add)

    failed: list[str] = []
    monkeypatch.setattr(invocation_store, "_register", failing_once)
    trigger = create_trigger(api, cronExpression="0 16 * * *")
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert failed == [run.invocation_id]
    assert [event["detail"]["status"] for event in received()] == ["completed"]
    shown = api.request("GET", f"{BASE}/{trigger['id']}").body
    assert (shown["lastRunStatus"], shown["lastOutcomeStatus"]) == ("completed", "completed")
    assert invocation_store.open_invocations("acme", trigger["id"], run.incarnation) == []

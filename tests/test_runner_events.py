"""The sample runner events in events/ (also used by `make invoke`) drive each runner handler."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
import runner_handler
from aws_lambda_powertools.utilities.typing import LambdaContext
from sundial.adapters.agent_http import AgentClient
from sundial.store.records import InvocationRecord, invocation_partition

from sundial_local.invoke import adopt_sample_incarnation
from tests.conftest import BASE, EVENTS, ApiClient, Stack, lambda_context
from tests.runner_support import TEST_TOKEN, AgentServer

SCHEDULED_FOR = datetime(2026, 11, 27, 8, 0, tzinfo=UTC)


def event(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return loaded


def context(function: str) -> LambdaContext:
    return lambda_context(function)


@pytest.fixture
def agent(stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The sample trigger (from events/api_create_trigger.json) and a local agent; the clock at its run."""
    body = json.loads(event("api_create_trigger.json")["body"])
    assert api.request("POST", BASE, body).status == 201
    adopt_sample_incarnation(stack.dynamodb, stack.settings.triggers_table)
    stack.clock.set(SCHEDULED_FOR)
    monkeypatch.setattr(runner_handler, "deps", lambda: stack.deps)
    with AgentServer() as server:
        client = AgentClient(server.url, lambda: TEST_TOKEN)
        monkeypatch.setattr(runner_handler, "agent", lambda: client)
        yield server


def invocation() -> InvocationRecord:
    prepared = event("runner_prepare.json")["input"]
    partition = invocation_partition(prepared["tenantId"], prepared["triggerId"], prepared["incarnation"])
    return InvocationRecord.get(partition, prepared["invocationId"])


def test_prepare_event_records_the_pending_invocation(agent: AgentServer) -> None:
    sample = event("runner_prepare.json")
    state = runner_handler.prepare_handler(sample, context("sundial-runner-prepare"))

    assert state == event("runner_attempt.json")
    record = invocation()
    assert (record.status, record.kind, record.scheduled_for) == ("pending", "scheduled", SCHEDULED_FOR)
    assert record.execution_arn == sample["executionArn"]
    assert record.idempotency_key == sample["input"]["idempotencyKey"]


def test_attempt_event_calls_the_agent_and_completes(agent: AgentServer) -> None:
    runner_handler.prepare_handler(event("runner_prepare.json"), context("sundial-runner-prepare"))
    sample = event("runner_attempt.json")
    state = runner_handler.attempt_handler(sample, context("sundial-runner-attempt"))

    assert state == {**sample, "attemptNumber": 1, "outcome": "completed"}
    [received] = agent.received
    assert received.body["message"] == "Write the sales report for 2026-11-27T08:00:00Z"
    assert received.body["timezone"] == "Europe/Berlin"
    record = invocation()
    assert (record.status, record.conversation_ids) == ("completed", ["conv-1"])


def test_finalize_event_records_the_failure(agent: AgentServer) -> None:
    runner_handler.prepare_handler(event("runner_prepare.json"), context("sundial-runner-prepare"))
    sample = event("runner_finalize.json")
    state = runner_handler.finalize_handler(sample, context("sundial-runner-finalize"))

    assert state == {**sample, "outcome": "failed"}
    record = invocation()
    assert (record.status, record.error) == ("failed", "States.Timeout: Task timed out after 840 seconds")
    assert agent.received == []


def test_execution_ended_event_closes_the_stopped_run(agent: AgentServer) -> None:
    runner_handler.prepare_handler(event("runner_prepare.json"), context("sundial-runner-prepare"))
    sample = event("runner_execution_ended.json")
    result = runner_handler.execution_ended_handler(sample, context("sundial-runner-watcher"))

    prepared = event("runner_prepare.json")
    assert result == {"invocationId": prepared["input"]["invocationId"], "status": "cancelled", "closed": True}
    record = invocation()
    assert (record.status, record.error) == ("cancelled", "execution stopped")
    assert record.execution_arn == sample["detail"]["executionArn"] == prepared["executionArn"]
    assert agent.received == []

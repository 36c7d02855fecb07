"""The runner's behaviour: statemachine/runner.asl.json executed by moto's interpreter with the real handlers.

The agent is a real HTTP server (tests.runner_support.AgentServer); Wait states and Retry
backoffs are recorded instead of slept, so each scenario takes milliseconds of wall time.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import pytest
import runner_handler
from moto.awslambda_simple.models import LambdaSimpleBackend
from moto.core.exceptions import JsonRESTError
from sundial.adapters.agent_http import AgentRequest, AgentResult
from sundial.deps import Deps
from sundial.domain import naming, retry_policy
from sundial.services import cancellation, runner
from sundial.store import invocations as invocation_store
from sundial.store import triggers as trigger_store
from sundial.store.records import InvocationRecord, TriggerRecord, invocation_partition, trigger_pk

from sundial_local.template import asl_path, resource
from tests.api_support import incarnation_of, registered_open
from tests.conftest import BASE, ApiClient, Stack, make_settings
from tests.runner_support import (
    AgentServer,
    Harness,
    Reply,
    Run,
    create_trigger,
    entered_states,
    lambda_invocations,
    runner_harness,
    state_transitions,
    trigger_of,
    wait_for_execution,
)

AT = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)
AT_TEXT = "2026-11-26T16:00:00Z"


@pytest.fixture
def harness(stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with runner_harness(stack, monkeypatch) as harness:
        yield harness


def create(api: ApiClient, **fields: Any) -> dict[str, Any]:
    return create_trigger(api, **{"cronExpression": "0 16 * * *", **fields})


def attempts_of(run: Run) -> list[dict[str, Any]]:
    return list(run.invocation().attempts or [])


def outcomes(run: Run) -> list[str]:
    return [entry["outcome"] for entry in attempts_of(run)]


def test_first_try_success_records_everything_in_five_transitions(harness: Harness, api: ApiClient) -> None:
    trigger = create(api)
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.status == "SUCCEEDED", run.described
    events = harness.events(run)
    assert entered_states(events) == ["Prepare", "WaitUntilScheduled", "Attempt", "Route", "Done"]
    assert state_transitions(events) <= 5
    record = run.invocation()
    assert record.status == "completed"
    assert record.kind == "scheduled"
    assert record.execution_arn == run.execution_arn
    assert record.started_at == AT
    assert record.completed_at == AT
    assert record.conversation_ids == ["conv-1"]
    assert not registered_open(record)
    assert attempts_of(run) == [
        {
            "number": 1,
            "startedAt": AT_TEXT,
            "endedAt": AT_TEXT,
            "outcome": "succeeded",
            "httpStatus": 200,
            "error": None,
            "conversationId": "conv-1",
        }
    ]
    shown = trigger_of(api, trigger["id"])
    assert shown["lastRunAt"] == AT_TEXT
    assert shown["lastRunStatus"] == "completed"
    assert shown["lastRunConversationIds"] == ["conv-1"]
    assert shown["enabled"] is True


def test_waits_until_scheduled_for(harness: Harness, api: ApiClient, stack: Stack) -> None:
    trigger = create(api)
    stack.clock.set(AT - timedelta(seconds=90))
    run = harness.finish(harness.start_scheduled("acme", trigger["id"], AT))

    assert run.status == "SUCCEEDED"
    # moto measures TimestampPath against the machine's real clock, so only the recorded wait's existence is stable.
    assert len(harness.waits.seconds(run.execution_arn, "WaitUntilScheduled")) == 1
    assert harness.agent.received[0].body["scheduledFor"] == AT_TEXT


def test_failure_then_success(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, maxRetries=2, retryDelaySeconds=30)
    harness.agent.then(Reply(503, {"message": "warming up"}), Reply(200, {"conversationId": "c-2"}))
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.status == "SUCCEEDED"
    assert outcomes(run) == ["retryable_error", "succeeded"]
    first, second = attempts_of(run)
    assert first["httpStatus"] == 503
    assert first["error"] == 'HTTP 503: {"message": "warming up"}'
    assert second["conversationId"] == "c-2"
    record = run.invocation()
    assert record.status == "completed"
    assert record.attempt_number == 2
    assert record.error is None
    assert [r.headers["idempotency-key"] for r in harness.agent.received] == [
        f"{run.invocation_id}:1",
        f"{run.invocation_id}:2",
    ]
    assert [r.body["attemptNumber"] for r in harness.agent.received] == [1, 2]
    [delay] = harness.waits.seconds(run.execution_arn, "Backoff")
    assert 30 <= delay < 39
    assert entered_states(harness.events(run)).count("Attempt") == 2


def test_retry_delays_stay_within_bounds(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, maxRetries=6, retryDelaySeconds=45)
    harness.agent.then(*[Reply(500) for _ in range(7)])
    run = harness.run_scheduled("acme", trigger["id"], AT)

    delays = harness.waits.seconds(run.execution_arn, "Backoff")
    assert len(delays) == 6
    for retry, delay in enumerate(delays, start=1):
        low = 45 * 2 ** (retry - 1)
        assert low <= delay < low * 1.3, (retry, delay)


def test_retries_exhausted_fail_the_run(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, maxRetries=2, retryDelaySeconds=10)
    harness.agent.then(Reply(502), Reply(429), Reply(500, {"error": "still broken"}))
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.status == "FAILED"
    assert run.described["error"] == "AgentRunFailed"
    assert outcomes(run) == ["retryable_error"] * 3
    record = run.invocation()
    assert record.status == "failed"
    assert record.error == 'HTTP 500: {"error": "still broken"}'
    assert len(harness.agent.received) == 3
    shown = trigger_of(api, trigger["id"])
    assert (shown["lastRunStatus"], shown["lastRunConversationIds"]) == ("failed", [])


def test_non_retryable_4xx_fails_at_once(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, maxRetries=3)
    harness.agent.then(Reply(422, {"error": "unknown agent"}))
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.status == "FAILED"
    assert outcomes(run) == ["rejected"]
    assert run.invocation().status == "failed"
    assert harness.waits.seconds(run.execution_arn, "Backoff") == []
    assert len(harness.agent.received) == 1


class ShortTimeouts:
    """The real client with every timeout cut to `seconds`, so a hung agent takes a test a second, not 30."""

    def __init__(self, inner: Any, seconds: float) -> None:
        self.inner, self.seconds = inner, seconds
        self.requested: list[float] = []

    def call(self, request: AgentRequest, timeout_seconds: float) -> AgentResult:
        self.requested.append(timeout_seconds)
        result: AgentResult = self.inner.call(request, self.seconds)
        return result


def test_agent_timeout_is_a_retryable_attempt(
    harness: Harness, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    trigger = create(api, timeoutSeconds=45, maxRetries=1)
    short = ShortTimeouts(runner_handler.agent(), 1.0)
    monkeypatch.setattr(runner_handler, "agent", lambda: short)
    harness.agent.then(Reply(200, {"conversationId": "late"}, delay=5), Reply(200, {"conversationId": "c-2"}))
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.status == "SUCCEEDED"
    assert outcomes(run) == ["timeout", "succeeded"]
    assert attempts_of(run)[0]["error"] == "no response within 1s"
    assert short.requested == [45, 45]
    assert run.invocation().conversation_ids == ["c-2"]


def test_attempt_task_timeout_is_recorded_as_failed(harness: Harness, api: ApiClient) -> None:
    """The Task's TimeoutSecondsPath (timeoutSeconds + margin) firing ends in Finalize, not in silence."""
    trigger = create(api, timeoutSeconds=120)
    routed = LambdaSimpleBackend.invoke

    def hangs(self: Any, function_name: str, *args: Any) -> Any:
        if function_name.endswith("sundial-runner-attempt"):
            raise TimeoutError("the Attempt Lambda ran past the Task's timeout")
        return routed(self, function_name, *args)

    with mock.patch.object(LambdaSimpleBackend, "invoke", hangs):
        run = harness.run_scheduled("acme", trigger["id"], AT)

    assert (run.status, run.described["error"]) == ("FAILED", "SundialRunnerError")
    assert harness.waits.retry_sleeps == [], "a timed-out attempt may still be calling the agent: not retried"
    prepared = next(e for e in harness.events(run) if e["type"] == "TaskSucceeded")
    assert json.loads(prepared["taskSucceededEventDetails"]["output"])["Payload"]["attemptTimeoutSeconds"] == 180
    assert entered_states(harness.events(run))[-2:] == ["Finalize", "ExecutionBroken"]
    record = run.invocation()
    assert record.status == "failed"
    assert record.error is not None
    assert record.error.startswith("States.Timeout")
    assert trigger_of(api, trigger["id"])["lastRunStatus"] == "failed"


def test_cancel_during_backoff_stops_the_execution(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, maxRetries=3)
    harness.agent.then(Reply(503))
    run_ids: dict[str, str] = {}

    def cancel(_execution_arn: str) -> None:
        path = f"{BASE}/{trigger['id']}/invocations/{run_ids['invocation']}/cancel"
        cancelled = api.request("POST", path)
        assert cancelled.status == 200, cancelled.body

    harness.waits.hooks["Backoff"] = cancel
    harness.stack.clock.set(AT)
    started = harness.start_scheduled("acme", trigger["id"], AT)
    run_ids["invocation"] = started.invocation_id
    run = harness.finish(started)

    assert run.status == "ABORTED"
    assert len(harness.agent.received) == 1
    record = run.invocation()
    assert (record.status, record.error) == ("cancelled", "cancelled by request")
    assert outcomes(run) == ["retryable_error"]


def test_cancel_is_noticed_before_the_next_attempt(harness: Harness, api: ApiClient) -> None:
    """Even if stopping the execution did not happen, the next Attempt stands down without calling the agent."""
    trigger = create(api, maxRetries=3)
    harness.agent.then(Reply(503))

    def cancel_record_only(_execution_arn: str) -> None:
        [record] = invocation_store.open_invocations("acme", trigger["id"], incarnation_of(trigger["id"]))
        assert invocation_store.finish(harness.stack.deps, record, "cancelled", "cancelled by request")

    harness.waits.hooks["Backoff"] = cancel_record_only
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.status == "SUCCEEDED"
    assert entered_states(harness.events(run))[-3:] == ["Attempt", "Route", "Done"]
    assert len(harness.agent.received) == 1
    assert run.invocation().status == "cancelled"


@pytest.mark.parametrize(
    ("reply", "would_be"), [(Reply(200, {"conversationId": "c"}), "completed"), (Reply(400), "failed")]
)
def test_completed_or_failed_never_overwrites_cancelled(
    harness: Harness, api: ApiClient, reply: Reply, would_be: str
) -> None:
    trigger = create(api, maxRetries=0)

    def cancel_during_call() -> None:
        [record] = invocation_store.open_invocations("acme", trigger["id"], incarnation_of(trigger["id"]))
        cancellation.cancel(harness.stack.deps, record, "cancelled by request")

    reply.action = cancel_during_call
    harness.agent.then(reply)
    run = harness.run_scheduled("acme", trigger["id"], AT)

    record = run.invocation()
    assert record.status == "cancelled", f"a {would_be} run overwrote the cancellation"
    assert record.error == "cancelled by request"
    assert len(attempts_of(run)) == 1, "the attempt in flight is still recorded"
    assert attempts_of(run)[0]["afterCancel"] is True, "and flagged as having come back after the cancel"
    shown = api.request("GET", f"{BASE}/{trigger['id']}/invocations/{run.invocation_id}").body
    assert (shown["status"], shown["attempts"][0]["afterCancel"]) == ("cancelled", True)
    assert trigger_of(api, trigger["id"])["lastRunStatus"] is None


def test_overlap_skip_records_skipped_without_calling_the_agent(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, cronExpression="0 * * * *", overlapPolicy="skip")
    harness.agent.then(Reply(200, {"conversationId": "slow"}, delay=30))
    harness.stack.clock.set(AT)
    first = harness.start_scheduled("acme", trigger["id"], AT)
    wait_until(lambda: len(harness.agent.received) == 1)

    second = harness.run_scheduled("acme", trigger["id"], AT + timedelta(hours=1))
    assert second.status == "SUCCEEDED"
    assert second.invocation().status == "skipped"
    assert attempts_of(second) == []
    assert len(harness.agent.received) == 1
    assert trigger_of(api, trigger["id"])["lastRunStatus"] == "skipped"

    harness.agent.release.set()
    assert harness.finish(first).invocation().status == "completed"


def test_overlap_skip_ignores_a_later_occurrence_still_waiting(harness: Harness, api: ApiClient) -> None:
    """A claimed occurrence waiting for its time is not a run in progress."""
    trigger = create(api, cronExpression="0 * * * *", overlapPolicy="skip")
    later_at = AT + timedelta(hours=1)
    earlier: list[Run] = []

    def run_the_earlier_one(execution_arn: str) -> None:
        if not earlier:
            earlier.append(harness.start_scheduled("acme", trigger["id"], AT))
            harness.finish(earlier[0])

    harness.waits.hooks["WaitUntilScheduled"] = run_the_earlier_one
    harness.stack.clock.set(AT)
    later = harness.finish(harness.start_scheduled("acme", trigger["id"], later_at))

    assert earlier[0].invocation().status == "completed"
    assert later.invocation().status == "completed"


def wait_until(condition: Any, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def delete_record(api: ApiClient, trigger_id: str) -> None:
    """A delete the cascade could not see: it landed between the claim and Prepare."""
    TriggerRecord.get(trigger_pk("acme", trigger_id)).delete()


def disable(api: ApiClient, trigger_id: str) -> None:
    assert api.request("PATCH", f"{BASE}/{trigger_id}", {"enabled": False}).status == 200


def reschedule(api: ApiClient, trigger_id: str) -> None:
    assert api.request("PATCH", f"{BASE}/{trigger_id}", {"cronExpression": "30 17 * * *"}).status == 200


@pytest.mark.parametrize("change", [delete_record, disable, reschedule])
def test_trigger_changed_before_the_wait_ends_is_superseded(harness: Harness, api: ApiClient, change: Any) -> None:
    trigger = create(api)
    harness.waits.hooks["WaitUntilScheduled"] = lambda _arn: change(api, trigger["id"])
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.status == "SUCCEEDED"
    record = run.invocation()
    assert (record.status, record.error) == ("cancelled", "superseded")
    assert harness.agent.received == []
    assert attempts_of(run) == []


def test_deleting_the_trigger_during_the_wait_cancels_the_run(harness: Harness, api: ApiClient) -> None:
    trigger = create(api)

    def delete(_execution_arn: str) -> None:
        assert api.request("DELETE", f"{BASE}/{trigger['id']}").status == 204

    harness.waits.hooks["WaitUntilScheduled"] = delete
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.status == "ABORTED"
    assert (run.invocation().status, run.invocation().error) == ("cancelled", "trigger deleted")
    assert harness.agent.received == []


def test_rescheduled_to_the_same_instant_runs_the_agent_once(harness: Harness, api: ApiClient) -> None:
    """The old claim stands down; the new claim (a new schedule version, so a new execution) runs."""
    trigger = create(api)
    versions: list[Run] = []

    def reschedule_and_reclaim(execution_arn: str) -> None:
        if versions:
            return
        assert api.request("PATCH", f"{BASE}/{trigger['id']}", {"cronExpression": "0 */4 * * *"}).status == 200
        versions.append(harness.start_scheduled("acme", trigger["id"], AT))

    harness.waits.hooks["WaitUntilScheduled"] = reschedule_and_reclaim
    old = harness.run_scheduled("acme", trigger["id"], AT)
    new = harness.finish(versions[0])

    assert old.execution_arn != new.execution_arn
    assert (old.invocation().status, old.invocation().error) == ("cancelled", "superseded")
    assert new.invocation().status == "completed"
    assert len(harness.agent.received) == 1


def skip_trigger_whose_claims_sort(api: ApiClient, superseded_first: bool) -> dict[str, Any]:
    """A skip trigger whose claim of AT (v1) sorts before, or after, its claim of AT after a re-schedule (v2).

    Execution names hash a random per-creation incarnation, so triggers are created until one fits.
    """
    for number in itertools.count():
        trigger = create(api, id=f"hourly-{number}", overlapPolicy="skip")
        row = TriggerRecord.get(trigger_pk("acme", trigger["id"]))
        superseded, current = (
            naming.invocation_id_for(
                naming.scheduled_execution_name("acme", row.trigger_id, row.incarnation, version, AT), AT
            )
            for version in (1, 2)
        )
        if (superseded < current) == superseded_first:
            return trigger
        assert api.request("DELETE", f"{BASE}/{trigger['id']}").status == 204
    raise AssertionError("unreachable")


@pytest.mark.parametrize("superseded_sorts_first", [True, False])
def test_skip_policy_rescheduled_to_the_same_instant_runs_the_agent_once(
    harness: Harness, api: ApiClient, superseded_sorts_first: bool
) -> None:
    """The new claim's Attempt comes first while the superseded claim still waits: that one is no run in progress."""
    trigger = skip_trigger_whose_claims_sort(api, superseded_sorts_first)
    rescheduled: list[Run] = []

    def reschedule_and_run_the_new_claim(_execution_arn: str) -> None:
        if rescheduled:
            return
        assert api.request("PATCH", f"{BASE}/{trigger['id']}", {"cronExpression": "0 */4 * * *"}).status == 200
        rescheduled.append(harness.start_scheduled("acme", trigger["id"], AT))
        harness.finish(rescheduled[0])

    harness.waits.hooks["WaitUntilScheduled"] = reschedule_and_run_the_new_claim
    old = harness.run_scheduled("acme", trigger["id"], AT, version=1)
    [new] = rescheduled

    assert (old.invocation().schedule_version, new.invocation().schedule_version) == (1, 2)
    assert (new.invocation_id > old.invocation_id) == superseded_sorts_first
    assert new.invocation().status == "completed"
    assert (old.invocation().status, old.invocation().error) == ("cancelled", "superseded")
    assert len(harness.agent.received) == 1
    shown = trigger_of(api, trigger["id"])
    assert (shown["enabled"], shown["lastRunStatus"]) == (True, "completed")


def test_a_running_run_of_an_older_schedule_version_still_blocks_a_skip_trigger(
    harness: Harness, api: ApiClient
) -> None:
    """Edits do not stop a run in progress, so the new schedule's first occurrence is skipped while it runs."""
    trigger = create(api, cronExpression="0 * * * *", overlapPolicy="skip")
    harness.agent.then(Reply(200, {"conversationId": "slow"}, delay=30))
    harness.stack.clock.set(AT)
    first = harness.start_scheduled("acme", trigger["id"], AT)
    wait_until(lambda: len(harness.agent.received) == 1)
    assert api.request("PATCH", f"{BASE}/{trigger['id']}", {"cronExpression": "30 * * * *"}).status == 200

    second = harness.run_scheduled("acme", trigger["id"], AT + timedelta(minutes=30))
    assert (second.invocation().status, len(harness.agent.received)) == ("skipped", 1)
    harness.agent.release.set()
    assert harness.finish(first).invocation().status == "completed"


@pytest.mark.parametrize(("reply", "status"), [(Reply(200), "completed"), (Reply(404), "failed")])
def test_one_time_trigger_is_disabled_after_its_run(
    harness: Harness, api: ApiClient, reply: Reply, status: str
) -> None:
    trigger = create(api, cronExpression=None, runAt=AT_TEXT, maxRetries=0)
    harness.agent.then(reply)
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.invocation().status == status
    shown = trigger_of(api, trigger["id"])
    assert (shown["enabled"], shown["nextRunAt"], shown["upcomingRuns"]) == (False, None, [])
    assert shown["lastRunStatus"] == status
    row = TriggerRecord.get(trigger_pk("acme", trigger["id"]))
    assert (row.schedule_version, row.due_shard, row.due_at) == (2, None, None)


def test_one_time_trigger_re_scheduled_during_its_run_stays_enabled(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, cronExpression=None, runAt=AT_TEXT)
    new_time = "2026-11-27T09:00:00Z"

    def reschedule() -> None:
        assert api.request("PATCH", f"{BASE}/{trigger['id']}", {"runAt": new_time}).status == 200

    harness.agent.then(Reply(200, action=reschedule))
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.invocation().status == "completed"
    shown = trigger_of(api, trigger["id"])
    assert (shown["enabled"], shown["nextRunAt"]) == (True, new_time)


def test_run_now_of_a_one_time_trigger_leaves_its_occurrence_scheduled(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, cronExpression=None, runAt=AT_TEXT)
    manual = api.request("POST", f"{BASE}/{trigger['id']}/run")
    assert manual.status == 202
    wait_for_execution(harness.stack.sfn, manual.body["executionArn"])

    shown = trigger_of(api, trigger["id"])
    assert (shown["enabled"], shown["nextRunAt"], shown["lastRunStatus"]) == (True, AT_TEXT, "completed")


def cancel_while_waiting(harness: Harness, api: ApiClient, trigger_id: str) -> None:
    def cancel(_execution_arn: str) -> None:
        [record] = invocation_store.open_invocations("acme", trigger_id, incarnation_of(trigger_id))
        cancelled = api.request("POST", f"{BASE}/{trigger_id}/invocations/{record.invocation_id}/cancel")
        assert cancelled.status == 200, cancelled.body

    harness.waits.hooks["WaitUntilScheduled"] = cancel


def test_cancelling_a_one_time_run_uses_up_its_occurrence(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, cronExpression=None, runAt=AT_TEXT)
    cancel_while_waiting(harness, api, trigger["id"])
    harness.stack.clock.set(AT - timedelta(seconds=30))
    run = harness.finish(harness.start_scheduled("acme", trigger["id"], AT))

    assert run.status == "ABORTED"
    assert (run.invocation().status, run.invocation().error) == ("cancelled", "cancelled by request")
    assert harness.agent.received == []
    shown = trigger_of(api, trigger["id"])
    assert (shown["enabled"], shown["nextRunAt"], shown["upcomingRuns"]) == (False, None, [])
    assert shown["lastRunStatus"] is None, "a cancellation is not a run"
    assert shown["updatedAt"] == "2026-11-26T15:59:30Z"
    row = TriggerRecord.get(trigger_pk("acme", trigger["id"]))
    assert (row.schedule_version, row.revision, row.due_shard, row.due_at) == (2, 2, None, None)


def test_cancelling_a_cron_run_leaves_the_trigger_scheduled(harness: Harness, api: ApiClient) -> None:
    trigger = create(api)
    cancel_while_waiting(harness, api, trigger["id"])
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.invocation().status == "cancelled"
    shown = trigger_of(api, trigger["id"])
    assert (shown["enabled"], shown["nextRunAt"]) == (True, AT_TEXT)
    assert TriggerRecord.get(trigger_pk("acme", trigger["id"])).revision == 1


def test_a_superseded_one_time_occurrence_leaves_the_re_scheduled_trigger_enabled(
    harness: Harness, api: ApiClient
) -> None:
    trigger = create(api, cronExpression=None, runAt=AT_TEXT)
    new_time = "2026-11-27T09:00:00Z"

    def move(_execution_arn: str) -> None:
        assert api.request("PATCH", f"{BASE}/{trigger['id']}", {"runAt": new_time}).status == 200

    harness.waits.hooks["WaitUntilScheduled"] = move
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert (run.invocation().status, run.invocation().error) == ("cancelled", "superseded")
    shown = trigger_of(api, trigger["id"])
    assert (shown["enabled"], shown["nextRunAt"]) == (True, new_time)


def test_cascading_cancels_do_not_use_up_a_one_time_occurrence(harness: Harness, api: ApiClient) -> None:
    """A delete cancels the trigger's runs and then deletes the trigger: there is nothing to disable."""
    trigger = create(api, cronExpression=None, runAt=AT_TEXT)
    cancelled: list[cancellation.Cancelled] = []

    def cascade(_execution_arn: str) -> None:
        cancelled.append(
            cancellation.cancel_all_open(
                harness.stack.deps, TriggerRecord.get(trigger_pk("acme", trigger["id"])), "trigger deleted"
            )
        )

    harness.waits.hooks["WaitUntilScheduled"] = cascade
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert (cancelled, run.status, run.invocation().status) == ([cancellation.Cancelled(1, 1)], "ABORTED", "cancelled")
    row = TriggerRecord.get(trigger_pk("acme", trigger["id"]))
    assert (row.enabled, row.schedule_version, row.revision) == (True, 1, 1)


def test_transient_lambda_error_is_retried_without_spending_a_retry(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, maxRetries=0)
    routed = LambdaSimpleBackend.invoke
    calls: list[str] = []

    def flaky(self: Any, function_name: str, *args: Any) -> Any:
        calls.append(function_name)
        if function_name.endswith("sundial-runner-attempt") and calls.count(function_name) == 1:
            raise JsonRESTError("ServiceException", "Lambda was briefly unavailable")
        return routed(self, function_name, *args)

    with mock.patch.object(LambdaSimpleBackend, "invoke", flaky):
        run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.status == "SUCCEEDED"
    assert run.invocation().status == "completed"
    assert outcomes(run) == ["succeeded"]
    assert len(harness.agent.received) == 1
    assert len(harness.waits.retry_sleeps) == 1
    assert lambda_invocations(harness.events(run)) == 3


def test_lambda_throttling_is_retried_with_jittered_backoff_without_spending_a_retry(
    harness: Harness, api: ApiClient
) -> None:
    """A throttled Attempt (account concurrency used up) is retried by the throttle retrier, not given up."""
    trigger = create(api, maxRetries=0)
    routed = LambdaSimpleBackend.invoke
    calls: list[str] = []
    throttled = 8  # more than the transient retrier's 6: only the throttle retrier allows this many

    def throttles(self: Any, function_name: str, *args: Any) -> Any:
        calls.append(function_name)
        if function_name.endswith("sundial-runner-attempt") and calls.count(function_name) <= throttled:
            raise JsonRESTError("TooManyRequestsException", "Rate Exceeded.")
        return routed(self, function_name, *args)

    with mock.patch.object(LambdaSimpleBackend, "invoke", throttles):
        run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.status == "SUCCEEDED", run.described
    assert (run.invocation().status, outcomes(run)) == ("completed", ["succeeded"])
    assert len(harness.agent.received) == 1
    sleeps = harness.waits.retry_sleeps
    assert len(sleeps) == throttled
    for retry, sleep in enumerate(sleeps):
        assert 0 <= sleep <= min(2**retry, 120), (retry, sleep)
    assert "Finalize" not in entered_states(harness.events(run))


def test_lost_lambda_response_replays_the_recorded_attempt(harness: Harness, api: ApiClient) -> None:
    """The handler ran but its answer was lost: the retried Task does not call the agent for that attempt again."""
    trigger = create(api, maxRetries=1)
    harness.agent.then(Reply(503), Reply(200, {"conversationId": "c-2"}))
    routed = LambdaSimpleBackend.invoke
    calls: list[str] = []

    def loses_first_answer(self: Any, function_name: str, *args: Any) -> Any:
        calls.append(function_name)
        answer = routed(self, function_name, *args)
        if function_name.endswith("sundial-runner-attempt") and calls.count(function_name) == 1:
            raise JsonRESTError("ServiceException", "response lost")
        return answer

    with mock.patch.object(LambdaSimpleBackend, "invoke", loses_first_answer):
        run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.invocation().status == "completed"
    assert outcomes(run) == ["retryable_error", "succeeded"]
    assert [r.body["attemptNumber"] for r in harness.agent.received] == [1, 2]


@pytest.mark.parametrize("step", ["prepare", "attempt"])
def test_a_step_error_is_retried_before_the_run_is_given_up(
    harness: Harness, api: ApiClient, monkeypatch: pytest.MonkeyPatch, step: str
) -> None:
    """A throttled Secrets Manager or DynamoDB call raised by a step is retried by the state machine."""
    trigger = create(api, maxRetries=0)
    real = getattr(runner, step)
    calls: list[str] = []

    def fails_once(*args: Any) -> runner.RunState:
        calls.append(step)
        if len(calls) == 1:
            raise RuntimeError("Rate exceeded")
        state: runner.RunState = real(*args)
        return state

    monkeypatch.setattr(runner, step, fails_once)
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.status == "SUCCEEDED", run.described
    assert (run.invocation().status, outcomes(run)) == ("completed", ["succeeded"])
    assert len(calls) == 2
    assert len(harness.agent.received) == 1
    [sleep] = harness.waits.retry_sleeps
    assert 0 <= sleep <= 2
    assert "Finalize" not in entered_states(harness.events(run))


def test_a_broken_step_is_recorded_as_failed(harness: Harness, api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> None:
    trigger = create(api)

    def prepare_breaks(*_args: Any) -> runner.RunState:
        raise RuntimeError("DynamoDB is unreachable")

    monkeypatch.setattr(runner, "prepare", prepare_breaks)
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.status == "FAILED"
    assert len(harness.waits.retry_sleeps) == 2, "retried twice before giving up"
    assert (run.described["error"], json.loads(run.described["cause"])["errorMessage"]) == (
        "SundialRunnerError",
        "DynamoDB is unreachable",
    )
    record = run.invocation()
    assert (record.status, record.error) == ("failed", "RuntimeError: DynamoDB is unreachable")
    assert harness.agent.received == []


def test_the_request_carries_the_trigger_and_the_rendered_message(harness: Harness, api: ApiClient) -> None:
    trigger = create(
        api,
        cronTimezone="Europe/Berlin",
        ref="release/2026.11",
        runAsUserId="alice",
        payload={"repo": {"name": "web"}, "days": 7, "flags": {"dry": True}},
        messageTemplate="{{triggerName}}: {{repo.name}} last {{days}} days {{flags}} {{missing}}at {{scheduledFor}}",
    )
    run = harness.run_scheduled("acme", trigger["id"], AT)

    [received] = harness.agent.received
    assert received.headers["authorization"] == "Bearer test-token-5f1c"
    assert received.body == {
        "tenantId": "acme",
        "projectId": "website",
        "agentId": "reporter",
        "ref": "release/2026.11",
        "runAsUserId": "alice",
        "triggerId": trigger["id"],
        "invocationId": run.invocation_id,
        "scheduledFor": AT_TEXT,
        "attemptNumber": 1,
        "timezone": "Europe/Berlin",
        "message": 'Nightly report: web last 7 days {"dry":true} at 2026-11-26T16:00:00Z',
        "payload": {"repo": {"name": "web"}, "days": 7, "flags": {"dry": True}},
    }
    assert run.invocation().ref == "release/2026.11"


def test_attempts_record_every_outcome_and_conversation(harness: Harness, api: ApiClient) -> None:
    trigger = create(api, maxRetries=3, retryDelaySeconds=10)
    harness.agent.then(
        Reply(500, {"conversationId": "ignored-on-error"}),
        Reply(drop=True),
        Reply(202, {"conversationId": "c-3"}),
    )
    run = harness.run_scheduled("acme", trigger["id"], AT)

    recorded = attempts_of(run)
    assert [(a["number"], a["outcome"], a["httpStatus"]) for a in recorded] == [
        (1, "retryable_error", 500),
        (2, "retryable_error", None),
        (3, "succeeded", 202),
    ]
    assert recorded[1]["error"].startswith("network error")
    assert run.invocation().conversation_ids == ["c-3"]
    detail = api.request("GET", f"{BASE}/{trigger['id']}/invocations/{run.invocation_id}").body
    assert [a["outcome"] for a in detail["attempts"]] == ["retryable_error", "retryable_error", "succeeded"]


def test_retry_delay_maths() -> None:
    assert retry_policy.retry_delay_seconds(60, 1, lambda: 0.0) == 60
    assert retry_policy.retry_delay_seconds(60, 3, lambda: 0.0) == 240
    assert retry_policy.retry_delay_seconds(60, 3, lambda: 0.999999) == 311
    assert retry_policy.retry_delay_seconds(3600, 4, lambda: 0.0) == 6 * 3600
    assert retry_policy.retry_delay_seconds(3600, 10, lambda: 0.5) == 6 * 3600
    assert retry_policy.retry_delay_seconds(10, 1, lambda: 0.5) == 11


def test_the_execution_input_of_a_missing_invocation_is_recreated_by_finalize(stack: Stack, api: ApiClient) -> None:
    """Finalize records a failure even when Prepare never got to write the invocation."""
    trigger = create(api)
    state = runner.RunState(
        tenant_id="acme",
        project_id="website",
        agent_id="reporter",
        trigger_id=trigger["id"],
        incarnation=incarnation_of(trigger["id"]),
        invocation_id="20261126T160000Z-0123456789abcdef0123",
        kind="scheduled",
        scheduled_for=AT_TEXT,
        schedule_version=1,
        idempotency_key="s-x-v1-20261126T160000Z",
        failure={"Error": "Lambda.Unknown", "Cause": "out of memory"},
    )
    out = runner.finalize(stack.deps, state)
    assert out.outcome == "failed"
    record = InvocationRecord.get(invocation_partition("acme", trigger["id"], state.incarnation), state.invocation_id)
    assert (record.status, record.error) == ("failed", "Lambda.Unknown: out of memory")


# Lambda throttling (account concurrency used up, the scaling rate, a reserved limit) has its own
# longer retrier, first, so a wake-up herd drains instead of failing (bench/herd_bench.py models it).
THROTTLE_RETRIER = {
    "ErrorEquals": ["Lambda.TooManyRequestsException"],
    "IntervalSeconds": 1,
    "MaxAttempts": 100,
    "BackoffRate": 2,
    "MaxDelaySeconds": 120,
    "JitterStrategy": "FULL",
}
TRANSIENT_RETRIER = {
    "ErrorEquals": [
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.ClientExecutionTimeoutException",
    ],
    "IntervalSeconds": 1,
    "MaxAttempts": 6,
    "BackoffRate": 2,
    "MaxDelaySeconds": 30,
    "JitterStrategy": "FULL",
}


def test_the_state_machine_retries_transient_lambda_errors_and_catches_everything_else() -> None:
    asl = json.loads(asl_path().read_text())
    tasks = {name: state for name, state in asl["States"].items() if state["Type"] == "Task"}
    assert set(tasks) == {"Prepare", "Attempt", "Finalize"}
    for name, task in tasks.items():
        throttle, transient = task["Retry"][:2]
        assert throttle == THROTTLE_RETRIER, name
        assert transient == TRANSIENT_RETRIER, name
        assert [catcher["ErrorEquals"] for catcher in task["Catch"]] == [["States.ALL"]], name
    for name in ("Prepare", "Attempt"):
        _throttle, _transient, step_error = tasks[name]["Retry"]
        assert step_error["ErrorEquals"] == ["States.TaskFailed"], name
        assert (step_error["MaxAttempts"], step_error["JitterStrategy"]) == (2, "FULL"), name
    assert tasks["Finalize"]["Retry"][-1]["ErrorEquals"] == ["States.ALL"]
    assert tasks["Attempt"]["TimeoutSecondsPath"] == "$.attemptTimeoutSeconds"
    assert asl["States"]["Backoff"]["SecondsPath"] == "$.retryDelaySeconds"
    assert asl["States"]["WaitUntilScheduled"]["TimestampPath"] == "$.startsAt"
    properties = resource("RunnerStateMachine")["Properties"]
    assert (properties["Type"], properties["DefinitionUri"]) == ("STANDARD", "statemachine/runner.asl.json")
    assert set(properties["DefinitionSubstitutions"]) == set(re.findall(r"\$\{(\w+)\}", asl_path().read_text()))


def test_a_failed_scheduled_run_pauses_a_trigger_that_asks_for_it(harness: Harness, api: ApiClient) -> None:
    """pauseOnFailure (SPEC §5): disabled with a reason naming the run; enabling it again clears the reason."""
    trigger = create(api, maxRetries=0, pauseOnFailure=True)
    assert (trigger["pauseOnFailure"], trigger["pausedReason"]) == (True, None)
    harness.agent.then(Reply(422, {"error": "unknown agent"}))
    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert run.invocation().status == "failed"
    paused = trigger_of(api, trigger["id"])
    assert (paused["enabled"], paused["nextRunAt"], paused["lastRunStatus"]) == (False, None, "failed")
    assert paused["pausedReason"] == (
        f'scheduled run {run.invocation_id} for {AT_TEXT} failed: HTTP 422: {{"error": "unknown agent"}}'
    )
    resumed = api.request("PATCH", f"{BASE}/{trigger['id']}", {"enabled": True})
    assert resumed.status == 200, resumed.body
    assert (resumed.body["enabled"], resumed.body["pausedReason"]) == (True, None)
    assert resumed.body["nextRunAt"] is not None


def test_only_a_failed_scheduled_run_of_a_trigger_that_asks_pauses_it(harness: Harness, api: ApiClient) -> None:
    """A trigger without pauseOnFailure keeps running; a failed run-now does not pause one that has it."""
    plain = create(api, maxRetries=0)
    harness.agent.then(Reply(422))
    harness.run_scheduled("acme", plain["id"], AT)
    assert (trigger_of(api, plain["id"])["enabled"], trigger_of(api, plain["id"])["pausedReason"]) == (True, None)

    asking = create(api, maxRetries=0, pauseOnFailure=True)
    harness.agent.then(Reply(422))
    accepted = api.request("POST", f"{BASE}/{asking['id']}/run")
    assert accepted.status == 202, accepted.body
    harness.finish(
        Run(
            accepted.body["executionArn"],
            accepted.body["invocationId"],
            "acme",
            asking["id"],
            incarnation_of(asking["id"]),
        )
    )
    assert run_status(asking["id"], accepted.body["invocationId"]) == "failed"
    assert trigger_of(api, asking["id"])["enabled"] is True


def run_status(trigger_id: str, invocation_id: str) -> str:
    record = InvocationRecord.get(
        invocation_partition("acme", trigger_id, incarnation_of(trigger_id)), invocation_id, consistent_read=True
    )
    return str(record.status)


def test_a_skipped_occurrence_does_not_hide_the_last_outcome(harness: Harness, api: ApiClient) -> None:
    """lastRun* show the latest finished occurrence, skipped included; lastOutcome* the latest that ran."""
    trigger = create(api, catchUpWindowSeconds=0)
    assert harness.run_scheduled("acme", trigger["id"], AT).invocation().status == "completed"
    tomorrow = AT + timedelta(days=1)
    harness.stack.clock.set(tomorrow + timedelta(hours=2))  # its first attempt comes hours late: missed
    late = harness.finish(harness.start_scheduled("acme", trigger["id"], tomorrow))
    assert late.invocation().status == "skipped"

    shown = trigger_of(api, trigger["id"])
    assert (shown["lastRunAt"], shown["lastRunStatus"]) == ("2026-11-27T16:00:00Z", "skipped")
    assert (shown["lastOutcomeAt"], shown["lastOutcomeStatus"]) == (AT_TEXT, "completed")


def test_a_run_that_ends_after_a_later_skipped_one_still_shows_as_the_last_outcome(api: ApiClient) -> None:
    """The two pairs move apart when only one may: lastRun stays the later skip, lastOutcome takes the run."""
    trigger = create(api)
    incarnation = incarnation_of(trigger["id"])
    later, earlier = AT + timedelta(days=1), AT
    assert trigger_store.record_last_run("acme", trigger["id"], incarnation, later, "skipped", [])
    assert not trigger_store.record_last_run("acme", trigger["id"], incarnation, earlier, "completed", ["c-1"])

    shown = trigger_of(api, trigger["id"])
    assert (shown["lastRunAt"], shown["lastRunStatus"]) == ("2026-11-27T16:00:00Z", "skipped")
    assert (shown["lastOutcomeAt"], shown["lastOutcomeStatus"]) == (AT_TEXT, "completed")
    assert not trigger_store.record_last_run("acme", trigger["id"], "another-incarnation", later, "failed", [])
    assert trigger_of(api, trigger["id"])["lastOutcomeStatus"] == "completed"


def test_a_cancel_of_a_running_run_tells_the_agent(
    harness: Harness, api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AGENT_CANCEL_URL gets {invocationId, attemptNumber} with the run's token; the run stays cancelled."""
    import api_handler

    with AgentServer() as cancels:
        settings = make_settings(stack.settings.state_machine_arn, AGENT_CANCEL_URL=cancels.url)
        telling = Deps(settings, clock=stack.clock, sfn_factory=lambda: stack.sfn)
        monkeypatch.setattr(api_handler, "deps", lambda: telling)
        trigger = create(api, maxRetries=0)

        def cancel_during_call() -> None:
            [record] = invocation_store.open_invocations("acme", trigger["id"], incarnation_of(trigger["id"]))
            path = f"{BASE}/{trigger['id']}/invocations/{record.invocation_id}/cancel"
            assert api.request("POST", path).status == 200

        harness.agent.then(Reply(200, {"conversationId": "late"}, action=cancel_during_call))
        run = harness.run_scheduled("acme", trigger["id"], AT)

        assert run.invocation().status == "cancelled"
        [told] = cancels.received
        assert told.body == {"invocationId": run.invocation_id, "attemptNumber": 1}
        assert told.headers["authorization"] == f"Bearer {settings.agent_run_token}"  # the agent's own token
        assert told.headers["idempotency-key"] == f"cancel:{run.invocation_id}:1"


def test_an_agent_refusing_the_cancel_or_a_pending_run_cancelled_changes_nothing(
    harness: Harness, api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refused cancel is logged and the run is cancelled anyway; a run that had not started is not told of."""
    import api_handler

    with AgentServer() as cancels:
        cancels.then(Reply(500, {"error": "down"}))
        settings = make_settings(stack.settings.state_machine_arn, AGENT_CANCEL_URL=cancels.url)
        telling = Deps(settings, clock=stack.clock, sfn_factory=lambda: stack.sfn)
        monkeypatch.setattr(api_handler, "deps", lambda: telling)
        trigger = create(api, maxRetries=0)

        def cancel_during_call() -> None:
            [record] = invocation_store.open_invocations("acme", trigger["id"], incarnation_of(trigger["id"]))
            path = f"{BASE}/{trigger['id']}/invocations/{record.invocation_id}/cancel"
            assert api.request("POST", path).status == 200

        harness.agent.then(Reply(200, action=cancel_during_call))
        run = harness.run_scheduled("acme", trigger["id"], AT)
        assert run.invocation().status == "cancelled"
        assert len(cancels.received) == 1  # told, refused, and the run is cancelled all the same

        pending = invocation_store.new_invocation(
            telling,
            tenant_id="acme",
            project_id="website",
            agent_id="reporter",
            trigger_id=trigger["id"],
            incarnation=incarnation_of(trigger["id"]),
            kind="manual",
            invocation_id="20261126T160500Z-00000000000000000001",
            idempotency_key="manual:pending",
            scheduled_for=AT,
            ref="main",
            execution_name="manual-pending-not-started",
        )
        assert invocation_store.put_if_absent(telling, pending)
        assert cancellation.cancel(telling, pending, "cancelled by request").status == "cancelled"
        assert len(cancels.received) == 1, "a pending run had no attempt to tell the agent about"

"""Run-now, cancel and rerun through the HTTP API, each starting the real runner state machine."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError
from sundial.contracts.api import AgentPath
from sundial.domain.auth import Principal
from sundial.domain.errors import ServiceUnavailableError
from sundial.services import invocations
from sundial.store import invocations as invocation_store
from sundial.store.records import invocation_partition

from tests.api_support import incarnation_of
from tests.conftest import BASE, ApiClient, Stack, token_claims
from tests.runner_support import Harness, Reply, runner_harness, wait_for_execution


@pytest.fixture
def harness(stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with runner_harness(stack, monkeypatch) as harness:
        yield harness


@pytest.fixture
def trigger_id(api: ApiClient) -> str:
    created = api.request("POST", BASE, {"name": "Digest", "cronExpression": "0 9 * * *", "maxRetries": 0})
    assert created.status == 201, created.body
    return str(created.body["id"])


def run_now(api: ApiClient, trigger_id: str, key: str | None = None) -> Any:
    return api.request("POST", f"{BASE}/{trigger_id}/run", headers={"Idempotency-Key": key} if key else None)


def invocation(api: ApiClient, trigger_id: str, invocation_id: str) -> dict[str, Any]:
    got = api.request("GET", f"{BASE}/{trigger_id}/invocations/{invocation_id}")
    assert got.status == 200, got.body
    body: dict[str, Any] = got.body
    return body


def test_run_now_runs_the_agent_through_the_state_machine(harness: Harness, api: ApiClient, trigger_id: str) -> None:
    accepted = run_now(api, trigger_id)

    assert accepted.status == 202
    assert set(accepted.body) == {"invocationId", "executionArn"}
    assert wait_for_execution(harness.stack.sfn, accepted.body["executionArn"])["status"] == "SUCCEEDED"
    shown = invocation(api, trigger_id, accepted.body["invocationId"])
    assert (shown["kind"], shown["status"], shown["executionArn"]) == (
        "manual",
        "completed",
        accepted.body["executionArn"],
    )
    assert [a["outcome"] for a in shown["attempts"]] == ["succeeded"]
    [received] = harness.agent.received
    assert received.body["invocationId"] == accepted.body["invocationId"]


def test_idempotency_key_repeats_return_the_same_invocation(harness: Harness, api: ApiClient, trigger_id: str) -> None:
    first = run_now(api, trigger_id, "deploy-42")
    wait_for_execution(harness.stack.sfn, first.body["executionArn"])
    again = run_now(api, trigger_id, "deploy-42")
    other = run_now(api, trigger_id, "deploy-43")
    wait_for_execution(harness.stack.sfn, other.body["executionArn"])

    assert (first.status, again.status, other.status) == (202, 202, 202)
    assert again.body == first.body
    assert other.body["invocationId"] != first.body["invocationId"]
    assert len(harness.agent.received) == 2
    listed = api.request("GET", f"{BASE}/{trigger_id}/invocations").body["data"]
    assert sorted(item["id"] for item in listed) == sorted([first.body["invocationId"], other.body["invocationId"]])


def parallel(count: int, call: Any) -> list[Any]:
    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(lambda _n: call(), range(count)))


def test_twenty_parallel_requests_without_a_key_give_twenty_invocations(
    harness: Harness, api: ApiClient, trigger_id: str
) -> None:
    responses = parallel(20, lambda: run_now(api, trigger_id))

    assert [r.status for r in responses] == [202] * 20, [r.body for r in responses if r.status != 202]
    ids = {r.body["invocationId"] for r in responses}
    assert len(ids) == 20
    for response in responses:
        wait_for_execution(harness.stack.sfn, response.body["executionArn"])
    listed = api.request("GET", f"{BASE}/{trigger_id}/invocations", query={"limit": 50}).body["data"]
    assert {item["id"] for item in listed} == ids
    assert {item["status"] for item in listed} == {"completed"}


def test_twenty_parallel_requests_with_one_key_give_one_invocation(
    harness: Harness, api: ApiClient, trigger_id: str
) -> None:
    responses = parallel(20, lambda: run_now(api, trigger_id, "same-key"))

    assert [r.status for r in responses] == [202] * 20, [r.body for r in responses if r.status != 202]
    assert len({r.body["invocationId"] for r in responses}) == 1
    wait_for_execution(harness.stack.sfn, responses[0].body["executionArn"])
    assert len(harness.agent.received) == 1


def test_cancel_marks_cancelled_and_stops_the_execution(harness: Harness, api: ApiClient, trigger_id: str) -> None:
    cancels: list[Any] = []

    def cancel_while_waiting(_execution_arn: str) -> None:
        [record] = invocation_store.open_invocations("acme", trigger_id, incarnation_of(trigger_id))
        cancels.append(api.request("POST", f"{BASE}/{trigger_id}/invocations/{record.invocation_id}/cancel"))

    harness.waits.hooks["WaitUntilScheduled"] = cancel_while_waiting
    accepted = run_now(api, trigger_id)
    described = wait_for_execution(harness.stack.sfn, accepted.body["executionArn"])

    assert described["status"] == "ABORTED"
    assert cancels[0].status == 200
    assert (cancels[0].body["status"], cancels[0].body["error"]) == ("cancelled", "cancelled by request")
    assert harness.agent.received == []
    again = api.request("POST", f"{BASE}/{trigger_id}/invocations/{accepted.body['invocationId']}/cancel")
    assert (again.status, again.body["status"]) == (200, "cancelled")


def test_cancel_of_a_finished_invocation_is_a_conflict(harness: Harness, api: ApiClient, trigger_id: str) -> None:
    accepted = run_now(api, trigger_id)
    wait_for_execution(harness.stack.sfn, accepted.body["executionArn"])

    refused = api.request("POST", f"{BASE}/{trigger_id}/invocations/{accepted.body['invocationId']}/cancel")
    assert refused.status == 409
    assert refused.error["code"] == "conflict"
    assert invocation(api, trigger_id, accepted.body["invocationId"])["status"] == "completed"
    unknown = api.request("POST", f"{BASE}/{trigger_id}/invocations/20261126T150000Z-nope/cancel")
    assert unknown.status == 404


def test_rerun_of_a_finished_invocation_starts_a_new_one(harness: Harness, api: ApiClient, trigger_id: str) -> None:
    harness.agent.then(Reply(400, {"error": "bad prompt"}))
    original = run_now(api, trigger_id)
    wait_for_execution(harness.stack.sfn, original.body["executionArn"])
    assert invocation(api, trigger_id, original.body["invocationId"])["status"] == "failed"

    rerun = api.request("POST", f"{BASE}/{trigger_id}/invocations/{original.body['invocationId']}/rerun")
    assert rerun.status == 202
    assert rerun.body["invocationId"] != original.body["invocationId"]
    assert wait_for_execution(harness.stack.sfn, rerun.body["executionArn"])["status"] == "SUCCEEDED"
    shown = invocation(api, trigger_id, rerun.body["invocationId"])
    assert (shown["kind"], shown["status"]) == ("rerun", "completed")
    assert shown["rerunOf"] == original.body["invocationId"]
    assert invocation(api, trigger_id, original.body["invocationId"])["rerunOf"] is None
    assert len(harness.agent.received) == 2


def test_rerun_of_an_unfinished_invocation_is_a_conflict(harness: Harness, api: ApiClient, trigger_id: str) -> None:
    answers: list[Any] = []

    def rerun_while_pending(_execution_arn: str) -> None:
        [record] = invocation_store.open_invocations("acme", trigger_id, incarnation_of(trigger_id))
        answers.append(api.request("POST", f"{BASE}/{trigger_id}/invocations/{record.invocation_id}/rerun"))

    harness.waits.hooks["WaitUntilScheduled"] = rerun_while_pending
    accepted = run_now(api, trigger_id)
    wait_for_execution(harness.stack.sfn, accepted.body["executionArn"])

    assert answers[0].status == 409
    assert "only finished ones re-run" in answers[0].error["message"]
    assert len(harness.agent.received) == 1


def test_viewers_may_not_run_cancel_or_rerun(harness: Harness, api: ApiClient, trigger_id: str) -> None:
    viewer = token_claims(roles=["viewer"])
    paths = [
        f"{BASE}/{trigger_id}/run",
        f"{BASE}/{trigger_id}/invocations/20261126T150000Z-x/cancel",
        f"{BASE}/{trigger_id}/invocations/20261126T150000Z-x/rerun",
    ]
    assert [api.request("POST", path, claims=viewer).status for path in paths] == [403, 403, 403]
    assert api.request("POST", f"{BASE}/no-such-trigger/run").status == 404


def test_a_run_that_cannot_start_is_not_left_pending(stack: Stack, api: ApiClient, trigger_id: str) -> None:
    def refuse(**_kwargs: Any) -> Any:
        raise ClientError({"Error": {"Code": "StateMachineDoesNotExist", "Message": "gone"}}, "StartExecution")

    stack.sfn.start_execution = refuse
    principal = Principal.from_claims(token_claims(), "tenant_id", "roles")
    with pytest.raises(ServiceUnavailableError):
        invocations.run_now(stack.deps, principal, AgentPath("acme", "website", "reporter"), trigger_id, None)

    partition = invocation_partition("acme", trigger_id, incarnation_of(trigger_id))
    [record] = [
        row for row in invocation_store.InvocationRecord.query(partition) if not row.invocation_id.startswith("#")
    ]
    assert (record.status, record.error) == ("failed", "the run could not be started")
    assert invocation_store.open_invocations("acme", trigger_id, incarnation_of(trigger_id)) == []


@pytest.mark.parametrize(
    "failure",
    [
        pytest.param(ReadTimeoutError(endpoint_url="https://states.us-east-1.amazonaws.com/"), id="no-answer"),
        pytest.param(ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "X"), id="refused"),
    ],
)
def test_a_run_step_functions_does_not_accept_is_a_503_not_a_500(
    stack: Stack, api: ApiClient, trigger_id: str, failure: Exception
) -> None:
    """The caller did nothing wrong and may repeat the request; the invocation is recorded as failed."""

    def fail(**_kwargs: Any) -> Any:
        raise failure

    stack.sfn.start_execution = fail
    response = api.request("POST", f"{BASE}/{trigger_id}/run", headers={"Idempotency-Key": "once"})

    assert response.status == 503, response.body
    assert response.body["error"]["code"] == "unavailable"
    listed = api.request("GET", f"{BASE}/{trigger_id}/invocations").body["data"]
    assert [(item["kind"], item["status"]) for item in listed] == [("manual", "failed")]

"""Cascades over HTTP (SPEC §3, §7): each of the four scopes deletes its triggers, cancels their open
invocations and stops their executions; repeats, races with creates and other tenants."""

from __future__ import annotations

import pytest
from sundial.services import cascades
from sundial.store.records import TriggerRecord

from sundial_local.stack import resume_running_cascades
from tests.api_support import DAILY, PROJECT_BASE, assert_error, raw_trigger
from tests.cascade_support import (
    ADMIN,
    OTHER_AGENT,
    SCOPES,
    USER_BASE,
    assert_cascaded,
    create,
    drive,
    run_now_everywhere,
    seed_scopes,
)
from tests.conftest import BASE, ApiClient, Stack, create_cascade_state_machine, token_claims

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


@pytest.mark.parametrize("scope", SCOPES)
def test_each_scope_deletes_its_triggers_cancels_their_runs_and_stops_their_executions(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch, scope: str
) -> None:
    path, query, expected = SCOPES[scope]
    seed_scopes(api)
    runs = run_now_everywhere(api)

    accepted = api.request("DELETE", path, query=query, claims=ADMIN)
    assert accepted.status == 202, accepted.body
    cascade_id = accepted.body["cascadeId"]
    running = api.request("GET", f"/tenants/acme/cascades/{cascade_id}", claims=ADMIN).body
    assert (running["state"], running["scope"], running["deleted"]) == ("running", scope, 0)

    assert drive(stack, monkeypatch, "acme", cascade_id) == [60]  # one pass, a pause, one that finds none

    progress = api.request("GET", f"/tenants/acme/cascades/{cascade_id}", claims=ADMIN)
    assert progress.status == 200
    body = progress.body
    assert (body["state"], body["found"], body["deleted"]) == ("completed", len(expected), len(expected))
    assert (body["invocationsCancelled"], body["executionsStopped"]) == (len(expected), len(expected))
    assert body["completedAt"] is not None
    assert_cascaded(stack, cascade_id, runs, expected)


def test_a_repeated_request_with_the_same_key_does_nothing_new(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api, BASE, "daily")
    key = {"Idempotency-Key": "project-deleted-42"}
    first = api.request("DELETE", PROJECT_BASE, headers=key, claims=ADMIN)
    drive(stack, monkeypatch, "acme", first.body["cascadeId"])
    create(api, BASE, "daily")  # after the cascade completed: a new trigger, which must stay

    again = api.request("DELETE", PROJECT_BASE, headers=key, claims=ADMIN)

    assert (again.status, again.body) == (202, first.body)
    assert len(stack.sfn.list_executions(stateMachineArn=stack.settings.cascade_state_machine_arn)["executions"]) == 1
    assert raw_trigger(stack, "daily") is not None
    other = api.request("DELETE", PROJECT_BASE, headers={"Idempotency-Key": "another"}, claims=ADMIN)
    assert other.body["cascadeId"] != first.body["cascadeId"]


def test_creates_and_enables_racing_a_cascade_are_refused_and_a_create_after_it_runs(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api, BASE, "paused", enabled=False)
    accepted = api.request("DELETE", BASE, claims=ADMIN)
    cascade_id = accepted.body["cascadeId"]

    refused = api.request("POST", BASE, {"id": "late", **DAILY})
    error = assert_error(refused, 409, "conflict")
    assert cascade_id in error["message"]
    enabling = api.request("PATCH", f"{BASE}/paused", {"enabled": True}, claims=ADMIN)
    assert cascade_id in assert_error(enabling, 409, "conflict")["message"]
    moving = api.request("PATCH", f"{OTHER_AGENT}/x", {"ref": "main"})
    assert moving.status == 404  # (no such trigger: the check comes after the trigger is found)
    elsewhere = api.request("POST", OTHER_AGENT, {"id": "elsewhere", **DAILY})
    assert elsewhere.status == 201

    drive(stack, monkeypatch, "acme", cascade_id)

    assert raw_trigger(stack, "paused") is None
    after = api.request("POST", BASE, {"id": "late", **DAILY})
    assert after.status == 201, after.body
    stored = TriggerRecord.get("acme#late", consistent_read=True)
    assert stored.next_run_at is not None


def test_another_tenants_triggers_are_untouched(api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    create(api, BASE, "ours")
    globex = token_claims("gina", "[admin]", tenant="globex")
    theirs = api.request(
        "POST", BASE.replace("/acme/", "/globex/"), {"id": "ours", **DAILY, "runAsUserId": "bob"}, claims=globex
    )
    assert theirs.status == 201

    for path in (PROJECT_BASE, USER_BASE):
        accepted = api.request("DELETE", path, claims=ADMIN)
        drive(stack, monkeypatch, "acme", accepted.body["cascadeId"])

    assert raw_trigger(stack, "ours") is None
    assert raw_trigger(stack, "ours", tenant="globex") is not None
    foreign = api.request("DELETE", PROJECT_BASE.replace("/acme/", "/globex/"), claims=ADMIN)
    assert_error(foreign, 403, "forbidden")


def test_only_an_admin_may_cascade_or_read_a_cascade(api: ApiClient) -> None:
    create(api, BASE, "daily")
    editor = token_claims("alice", "[editor]")
    assert_error(api.request("DELETE", PROJECT_BASE, claims=editor), 403, "forbidden")
    accepted = api.request("DELETE", PROJECT_BASE, claims=ADMIN)
    assert_error(
        api.request("GET", f"/tenants/acme/cascades/{accepted.body['cascadeId']}", claims=editor), 403, "forbidden"
    )
    assert_error(api.request("GET", "/tenants/acme/cascades/csc_missing", claims=ADMIN), 404, "not_found")


def test_moving_a_trigger_into_a_running_cascades_scope_is_refused_and_onto_an_old_one_is_not(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api, BASE, "mover", ref="main")
    old = api.request("DELETE", PROJECT_BASE, query={"ref": "release"}, claims=ADMIN)
    drive(stack, monkeypatch, "acme", old.body["cascadeId"])
    running = api.request("DELETE", PROJECT_BASE, query={"ref": "feature/y"}, claims=ADMIN)

    refused = api.request("PATCH", f"{BASE}/mover", {"ref": "feature/y"}, claims=ADMIN)
    moved = api.request("PATCH", f"{BASE}/mover", {"ref": "release"}, claims=ADMIN)

    assert running.body["cascadeId"] in assert_error(refused, 409, "conflict")["message"]
    assert moved.status == 200, moved.body
    stored = TriggerRecord.get("acme#mover", consistent_read=True)
    assert (stored.ref, stored.ref_since) == ("release", stack.clock())
    assert cascades.covering_tombstone(stored) is None  # the old cascade is from before the move


def test_the_local_stack_resumes_a_running_cascade_after_a_restart(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Executions do not survive a restart of the local stack; the cascade records do."""
    create(api, BASE, "daily")
    finished = api.request("DELETE", OTHER_AGENT, claims=ADMIN).body["cascadeId"]
    drive(stack, monkeypatch, "acme", finished)
    running = api.request("DELETE", PROJECT_BASE, claims=ADMIN).body["cascadeId"]
    arn = stack.settings.cascade_state_machine_arn
    stack.sfn.delete_state_machine(stateMachineArn=arn)  # what a restart leaves: no executions
    create_cascade_state_machine(stack.sfn, stack.settings)

    assert resume_running_cascades(stack.dynamodb, stack.sfn, stack.settings.triggers_table, arn) == 1
    resume_running_cascades(stack.dynamodb, stack.sfn, stack.settings.triggers_table, arn)  # the same one again
    [resumed] = stack.sfn.list_executions(stateMachineArn=arn)["executions"]
    assert (resumed["name"], resumed["status"]) == (running, "RUNNING")
    drive(stack, monkeypatch, "acme", running)
    assert raw_trigger(stack, "daily") is None

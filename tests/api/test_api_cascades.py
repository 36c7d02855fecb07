"""Cascades over HTTP (SPEC §3, §7): each of the four scopes deletes its triggers, cancels their open
invocations and stops their executions; repeats, races with creates and other tenants."""

from __future__ import annotations

from typing import Any

import pytest
from sundial.services import cascades
from sundial.store.records import InvocationRecord, TriggerRecord

from tests.api_support import DAILY, PROJECT_BASE, assert_error, raw_trigger
from tests.cascade_support import ADMIN, drive
from tests.conftest import BASE, ApiClient, Stack, token_claims

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

OTHER_AGENT = "/tenants/acme/projects/website/agents/writer/scheduled-triggers"
OTHER_PROJECT = "/tenants/acme/projects/shop/agents/reporter/scheduled-triggers"
USER_BASE = "/tenants/acme/users/bob/scheduled-triggers"


def create(api: ApiClient, base: str, trigger_id: str, **fields: Any) -> None:
    created = api.request("POST", base, {"id": trigger_id, **DAILY, **fields}, claims=ADMIN)
    assert created.status == 201, created.body


def run_now(api: ApiClient, base: str, trigger_id: str) -> str:
    started = api.request("POST", f"{base}/{trigger_id}/run", claims=ADMIN)
    assert started.status == 202, started.body
    return str(started.body["invocationId"])


def invocation(trigger_id: str, invocation_id: str) -> InvocationRecord:
    [found] = [record for record in InvocationRecord.scan() if record.invocation_id == invocation_id]
    assert found.trigger_id == trigger_id
    return found


def execution_status(stack: Stack, record: InvocationRecord) -> str:
    return str(stack.sfn.describe_execution(executionArn=record.execution_arn)["status"])


def seed_scopes(api: ApiClient) -> None:
    """in-*: inside the scope the test names; the others are near misses of each scope."""
    create(api, BASE, "main-reporter", runAsUserId="bob")
    create(api, BASE, "feature-reporter", ref="feature/x")
    create(api, OTHER_AGENT, "main-writer", runAsUserId="dana")
    create(api, OTHER_PROJECT, "shop-reporter", runAsUserId="bob", ref="feature/x")


SCOPES = {
    "project": (PROJECT_BASE, {}, {"main-reporter", "feature-reporter", "main-writer"}),
    "agent": (BASE, {}, {"main-reporter", "feature-reporter"}),
    "ref": (PROJECT_BASE, {"ref": "feature/x"}, {"feature-reporter"}),
    "user": (USER_BASE, {}, {"main-reporter", "shop-reporter"}),
}
ALL = {"main-reporter", "feature-reporter", "main-writer", "shop-reporter"}


@pytest.mark.parametrize("scope", SCOPES)
def test_each_scope_deletes_its_triggers_cancels_their_runs_and_stops_their_executions(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch, scope: str
) -> None:
    path, query, expected = SCOPES[scope]
    seed_scopes(api)
    bases = {
        "main-reporter": BASE,
        "feature-reporter": BASE,
        "main-writer": OTHER_AGENT,
        "shop-reporter": OTHER_PROJECT,
    }
    runs = {trigger_id: run_now(api, base, trigger_id) for trigger_id, base in bases.items()}

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
    for trigger_id in ALL:
        record = invocation(trigger_id, runs[trigger_id])
        if trigger_id in expected:
            assert raw_trigger(stack, trigger_id) is None
            assert record.status == "cancelled"
            assert cascade_id in (record.error or "")
            assert execution_status(stack, record) == "ABORTED"
        else:
            assert raw_trigger(stack, trigger_id) is not None
            assert record.status == "pending"
            assert execution_status(stack, record) == "RUNNING"


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

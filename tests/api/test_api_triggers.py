"""The trigger API end to end through the Lambda handler (SPEC sections 2 to 4): CRUD, listing and cursors,
PATCH of every field, optimistic concurrency, the sparse due index, upcoming runs, schedule previews
and the invocation read side."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from moto.dynamodb.models import DynamoDBBackend
from sundial.contracts.api import Trigger, TriggerPatch
from sundial.domain.auth import Principal
from sundial.domain.errors import ConflictError
from sundial.services import triggers
from sundial.store import triggers as trigger_store
from sundial.store.records import due_shard_for

from tests.api_support import (
    DAILY,
    PROJECT_BASE,
    assert_error,
    assert_utc_timestamps,
    due_index_entries,
    raw_trigger,
    scan,
    seed_invocation,
    trigger_path,
)
from tests.conftest import BASE, START, ApiClient, Stack, token_claims

WRITER_BASE = "/tenants/acme/projects/website/agents/writer/scheduled-triggers"
OTHER_PROJECT_BASE = "/tenants/acme/projects/intranet/scheduled-triggers"
ALICE = Principal("alice", "acme", frozenset({"editor"}))

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")
T1 = trigger_path("t1")


def create(api: ApiClient, trigger_id: str, base: str = BASE, **fields: Any) -> dict[str, Any]:
    response = api.request("POST", base, {"id": trigger_id, **DAILY, **fields})
    assert response.status == 201, response.body
    body: dict[str, Any] = response.body
    return body


# --- create and read ---------------------------------------------------------------------------


def test_create_applies_defaults_and_service_fields(api: ApiClient) -> None:
    created = api.request("POST", BASE, {"name": "  Daily report  ", "cronExpression": "0 9 * * *"})

    assert created.status == 201, created.body
    body = created.body
    assert body["id"].startswith("trg_")
    assert len(body["id"]) == 24
    assert body == {
        "id": body["id"],
        "tenantId": "acme",
        "projectId": "website",
        "agentId": "reporter",
        "name": "Daily report",
        "description": None,
        "enabled": True,
        "cronExpression": "0 9 * * *",
        "cronTimezone": "UTC",
        "runAt": None,
        "intervalSeconds": None,
        "startAt": None,
        "endAt": None,
        "maxRuns": None,
        "runsRemaining": None,
        "jitterSeconds": 0,
        "payload": None,
        "messageTemplate": None,
        "maxRetries": 1,
        "retryDelaySeconds": 60,
        "timeoutSeconds": 780,
        "runAsUserId": None,
        "ref": "main",
        "catchUpWindowSeconds": 3600,
        "overlapPolicy": "allow",
        "pauseOnFailure": False,
        "pausedReason": None,
        "finishedReason": None,
        "createdBy": "alice",
        "createdAt": "2026-11-26T15:00:00Z",
        "updatedAt": "2026-11-26T15:00:00Z",
        "nextRunAt": "2026-11-27T09:00:00Z",
        "lastRunAt": None,
        "lastRunStatus": None,
        "lastRunConversationIds": [],
        "lastOutcomeAt": None,
        "lastOutcomeStatus": None,
        "missedRunsSkipped": 0,
        "scheduleDescription": "At 09:00 (UTC)",
    }
    got = api.request("GET", trigger_path(body["id"]))
    assert got.status == 200
    assert {key: value for key, value in got.body.items() if key != "upcomingRuns"} == body


def test_create_stores_every_client_field(api: ApiClient, stack: Stack) -> None:
    fields = {
        "id": "weekday-report",
        "name": "Weekday report",
        "description": "Sales numbers",
        "enabled": True,
        "cronExpression": "0 9 * * MON-FRI",
        "cronTimezone": "Europe/Berlin",
        "payload": {"topic": "sales", "regions": ["emea", "apac"], "depth": {"n": 1}},
        "messageTemplate": "Write the {{topic}} report for {{scheduledFor}}",
        "maxRetries": 10,
        "retryDelaySeconds": 10,
        "timeoutSeconds": 30,
        "runAsUserId": "alice",
        "ref": "feature/q4-numbers",
        "catchUpWindowSeconds": 0,
        "overlapPolicy": "skip",
    }
    created = api.request("POST", BASE, fields)

    assert created.status == 201, created.body
    assert {key: created.body[key] for key in fields} == fields
    assert created.body["nextRunAt"] == "2026-11-27T08:00:00Z"
    assert created.body["scheduleDescription"] == "At 09:00, Monday through Friday (Europe/Berlin)"
    stored = raw_trigger(stack, "weekday-report")
    assert stored is not None
    assert json.loads(stored["payload"]) == fields["payload"]
    assert (stored["ref"], stored["overlap_policy"], stored["max_retries"]) == ("feature/q4-numbers", "skip", 10)


def test_duplicate_id_is_409_and_keeps_the_original(api: ApiClient, stack: Stack) -> None:
    create(api, "t1", name="Original")

    again = api.request("POST", BASE, {"id": "t1", "name": "Impostor", "cronExpression": "5 5 * * *"})

    error = assert_error(again, 409, "conflict")
    assert "'t1'" in error["message"]
    assert api.request("GET", T1).body["name"] == "Original"


def test_ids_are_unique_per_tenant_not_globally(api: ApiClient) -> None:
    create(api, "t1")
    other = api.request(
        "POST",
        "/tenants/globex/projects/website/agents/reporter/scheduled-triggers",
        {"id": "t1", **DAILY},
        claims=token_claims(tenant="globex"),
    )
    assert other.status == 201, other.body
    assert api.request("GET", T1).body["tenantId"] == "acme"


def test_get_includes_the_next_five_occurrences(api: ApiClient) -> None:
    create(api, "t1", cronExpression="0 9 * * MON-FRI", cronTimezone="Europe/Berlin")

    body = api.request("GET", T1).body

    assert body["upcomingRuns"] == [
        "2026-11-27T08:00:00Z",
        "2026-11-30T08:00:00Z",
        "2026-12-01T08:00:00Z",
        "2026-12-02T08:00:00Z",
        "2026-12-03T08:00:00Z",
    ]
    assert body["upcomingRuns"][0] == body["nextRunAt"]


def test_get_one_time_and_disabled_triggers(api: ApiClient) -> None:
    once = api.request("POST", BASE, {"id": "once", "name": "Once", "runAt": "2026-11-30T12:00:00+01:00"}).body
    assert (once["runAt"], once["nextRunAt"], once["cronExpression"]) == (
        "2026-11-30T11:00:00Z",
        "2026-11-30T11:00:00Z",
        None,
    )
    assert once["scheduleDescription"] == "Once at 2026-11-30T11:00:00Z"
    assert api.request("GET", trigger_path("once")).body["upcomingRuns"] == ["2026-11-30T11:00:00Z"]

    create(api, "off", enabled=False)
    off = api.request("GET", trigger_path("off")).body
    assert (off["nextRunAt"], off["upcomingRuns"]) == (None, [])


def test_a_trigger_is_only_found_under_its_own_agent_and_project(api: ApiClient) -> None:
    create(api, "t1")
    for path in (
        trigger_path("t1", WRITER_BASE),
        "/tenants/acme/projects/intranet/agents/reporter/scheduled-triggers/t1",
    ):
        for method, body in (("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)):
            assert_error(api.request(method, path, body), 404, "not_found")
    assert api.request("GET", T1).body["name"] == DAILY["name"]


def test_one_time_trigger_due_within_the_lookahead_is_started_at_once(api: ApiClient, stack: Stack) -> None:
    """A runAt up to a minute in the past is accepted, so it must still run: it is claimed at once."""
    for trigger_id, offset in (("soon", 30), ("just-missed", -30)):
        run_at = (START + timedelta(seconds=offset)).strftime("%Y-%m-%dT%H:%M:%SZ")
        created = api.request("POST", BASE, {"id": trigger_id, "name": "Once", "runAt": run_at})
        assert created.status == 201, created.body

    executions = stack.sfn.list_executions(stateMachineArn=stack.settings.state_machine_arn)["executions"]
    assert sorted(execution["name"][-16:] for execution in executions) == ["20261126T145930Z", "20261126T150030Z"]


def test_a_trigger_due_later_is_left_to_the_dispatcher(api: ApiClient, stack: Stack) -> None:
    create(api, "t1")
    assert stack.sfn.list_executions(stateMachineArn=stack.settings.state_machine_arn)["executions"] == []


# --- listing -----------------------------------------------------------------------------------


def _walk(api: ApiClient, path: str, limit: int, **params: Any) -> list[list[str]]:
    """Every page of a listing, as lists of ids, following nextCursor to the end."""
    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = api.request("GET", path, query=query)
        assert response.status == 200, response.body
        pages.append([item["id"] for item in response.body["data"]])
        cursor = response.body["nextCursor"]
        if cursor is None:
            return pages
        assert len(pages) < 50, "pagination does not end"


@pytest.fixture
def ten_triggers(api: ApiClient) -> None:
    """Seven triggers of agent reporter (created out of order) and three of agent writer."""
    for index in (3, 0, 6, 1, 5, 2, 4):
        create(api, f"r{index}")
    for index in range(3):
        create(api, f"w{index}", base=WRITER_BASE)
    create(api, "elsewhere", base="/tenants/acme/projects/intranet/agents/reporter/scheduled-triggers")


def test_agent_listing_pages_are_complete_ordered_and_stable(api: ApiClient, ten_triggers: None) -> None:
    pages = _walk(api, BASE, 3)

    assert pages == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]
    assert _walk(api, BASE, 3) == pages
    assert _walk(api, BASE, 7) == [["r0", "r1", "r2", "r3", "r4", "r5", "r6"]]
    assert _walk(api, BASE, 100) == [["r0", "r1", "r2", "r3", "r4", "r5", "r6"]]
    assert _walk(api, WRITER_BASE, 1) == [["w0"], ["w1"], ["w2"]]


def test_project_listing_spans_agents(api: ApiClient, ten_triggers: None) -> None:
    pages = _walk(api, PROJECT_BASE, 4)

    assert pages == [["r0", "r1", "r2", "r3"], ["r4", "r5", "r6", "w0"], ["w1", "w2"]]
    listing = api.request("GET", PROJECT_BASE).body
    assert {item["agentId"] for item in listing["data"]} == {"reporter", "writer"}
    assert listing["nextCursor"] is None


def test_listing_carries_last_run_information(api: ApiClient, stack: Stack) -> None:
    create(api, "t1")
    stack.dynamodb.update_item(
        TableName=stack.settings.triggers_table,
        Key={"pk": {"S": "acme#t1"}},
        UpdateExpression="SET last_run_at = :at, last_run_status = :status, last_run_conversation_ids = :ids",
        ExpressionAttributeValues={
            ":at": {"S": "2026-11-26T09:00:00Z"},
            ":status": {"S": "completed"},
            ":ids": {"L": [{"S": "conv-1"}]},
        },
    )

    item = api.request("GET", BASE).body["data"][0]

    assert (item["lastRunAt"], item["lastRunStatus"], item["lastRunConversationIds"]) == (
        "2026-11-26T09:00:00Z",
        "completed",
        ["conv-1"],
    )


def _cursor_after_first_page(api: ApiClient, path: str) -> str:
    cursor: str = api.request("GET", path, query={"limit": 1}).body["nextCursor"]
    assert cursor
    return cursor


def _reencode(cursor: str, change: Callable[[dict[str, Any]], Any]) -> str:
    key = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    changed = change(key)
    return base64.urlsafe_b64encode(json.dumps(changed if changed is not None else key).encode()).decode()


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda c: c[:-3], id="truncated"),
        pytest.param(lambda c: c[:10] + ("A" if c[10] != "A" else "B") + c[11:], id="flipped-character"),
        pytest.param(lambda c: c + "!", id="not-base64"),
        pytest.param(lambda c: _reencode(c, lambda k: k.update(pk="globex#r1")), id="other-tenant-key"),
        pytest.param(lambda c: _reencode(c, lambda k: k.update(project_key="acme#intranet")), id="other-project"),
        pytest.param(lambda c: _reencode(c, lambda k: k.update(agent_trigger="writer#r1")), id="other-agent"),
        pytest.param(lambda c: _reencode(c, lambda k: k.update(pk="acme#r5")), id="inconsistent-key"),
        pytest.param(lambda c: _reencode(c, lambda k: k.update(extra="x")), id="extra-key"),
        pytest.param(lambda c: _reencode(c, lambda k: k.pop("pk") and None), id="missing-key"),
        pytest.param(lambda c: _reencode(c, lambda k: k.update(pk=5)), id="number-value"),
        pytest.param(lambda c: _reencode(c, lambda k: [k]), id="not-an-object"),
    ],
)
def test_tampered_cursor_is_400(api: ApiClient, ten_triggers: None, tamper: Callable[[str], str]) -> None:
    cursor = _cursor_after_first_page(api, BASE)

    response = api.request("GET", BASE, query={"limit": 2, "cursor": tamper(cursor)})

    error = assert_error(response, 400, "bad_request")
    assert error["details"][0]["field"] == "cursor"


def test_cursor_of_another_listing_is_400(api: ApiClient, ten_triggers: None) -> None:
    create(api, "i1", base="/tenants/acme/projects/intranet/agents/reporter/scheduled-triggers")
    other_project = _cursor_after_first_page(api, OTHER_PROJECT_BASE)
    other_agent = _cursor_after_first_page(api, WRITER_BASE)

    assert_error(api.request("GET", PROJECT_BASE, query={"cursor": other_project}), 400, "bad_request")
    assert_error(api.request("GET", BASE, query={"cursor": other_project}), 400, "bad_request")
    assert_error(api.request("GET", BASE, query={"cursor": other_agent}), 400, "bad_request")
    # The same cursor is fine where it came from.
    assert api.request("GET", WRITER_BASE, query={"cursor": other_agent}).status == 200


# --- PATCH -------------------------------------------------------------------------------------

SCHEDULE_FIELDS = {"enabled", "cronExpression", "cronTimezone", "runAt"}


@pytest.mark.parametrize(
    ("field", "value", "expected", "next_run_at"),
    [
        ("name", "  Renamed  ", "Renamed", "2026-11-27T09:00:00Z"),
        ("description", "New words", "New words", "2026-11-27T09:00:00Z"),
        ("enabled", False, False, None),
        ("cronExpression", "15 10 * * *", "15 10 * * *", "2026-11-27T10:15:00Z"),
        ("cronTimezone", "Asia/Tokyo", "Asia/Tokyo", "2026-11-27T00:00:00Z"),
        ("runAt", "2026-12-24T18:00:00.250+01:00", "2026-12-24T17:00:00Z", "2026-12-24T17:00:00Z"),
        ("payload", {"topic": "ops", "n": [1, 2.5, None, True]}, None, "2026-11-27T09:00:00Z"),
        ("messageTemplate", "Hi {{topic}}", "Hi {{topic}}", "2026-11-27T09:00:00Z"),
        ("maxRetries", 0, 0, "2026-11-27T09:00:00Z"),
        ("retryDelaySeconds", 3600, 3600, "2026-11-27T09:00:00Z"),
        ("timeoutSeconds", 30, 30, "2026-11-27T09:00:00Z"),
        ("runAsUserId", "alice", "alice", "2026-11-27T09:00:00Z"),
        ("ref", "release/2026.11", "release/2026.11", "2026-11-27T09:00:00Z"),
        ("catchUpWindowSeconds", 604800, 604800, "2026-11-27T09:00:00Z"),
        ("overlapPolicy", "skip", "skip", "2026-11-27T09:00:00Z"),
        ("pauseOnFailure", True, True, "2026-11-27T09:00:00Z"),
    ],
)
def test_patch_changes_exactly_one_field(
    api: ApiClient, stack: Stack, field: str, value: Any, expected: Any, next_run_at: str | None
) -> None:
    create(api, "t1", description="Old words", payload={"topic": "sales"}, messageTemplate="Old")
    before = api.request("GET", T1).body
    stack.clock.advance(60)

    patched = api.request("PATCH", T1, {field: value})

    assert patched.status == 200, patched.body
    assert patched.body[field] == (value if expected is None else expected)
    assert patched.body["nextRunAt"] == next_run_at
    assert patched.body["updatedAt"] == "2026-11-26T15:01:00Z"
    after = api.request("GET", T1).body
    assert {key: after[key] for key in patched.body} == patched.body
    ignored = {field, "updatedAt", "nextRunAt", "upcomingRuns", "scheduleDescription"}
    if field == "runAt":
        ignored.add("cronExpression")
        assert after["cronExpression"] is None
    assert {k: v for k, v in after.items() if k not in ignored} == {k: v for k, v in before.items() if k not in ignored}
    stored = raw_trigger(stack, "t1")
    assert stored is not None
    assert stored["revision"] == 2
    assert stored["schedule_version"] == (2 if field in SCHEDULE_FIELDS else 1)


def test_patch_ref_alone_touches_nothing_else(api: ApiClient, stack: Stack) -> None:
    create(api, "t1")
    before = raw_trigger(stack, "t1")
    assert before is not None

    response = api.request("PATCH", T1, {"ref": "hotfix-42"})

    assert response.status == 200, response.body
    after = raw_trigger(stack, "t1")
    assert after is not None
    changed = {name for name in before.keys() | after.keys() if before.get(name) != after.get(name)}
    # updated_at is the same instant (the clock did not move); ref_since says since when it runs on this branch
    assert changed == {"ref", "revision", "ref_since"}
    assert after["ref"] == "hotfix-42"


def test_patch_null_clears_nullable_fields(api: ApiClient, stack: Stack) -> None:
    create(api, "t1", description="d", payload={"a": 1}, messageTemplate="m", runAsUserId="alice")

    response = api.request(
        "PATCH", T1, {"description": None, "payload": None, "messageTemplate": None, "runAsUserId": None}
    )

    assert response.status == 200, response.body
    assert [response.body[k] for k in ("description", "payload", "messageTemplate", "runAsUserId")] == [None] * 4
    stored = raw_trigger(stack, "t1")
    assert stored is not None
    assert not {"description", "payload", "message_template", "run_as_user_id"} & stored.keys()


def test_patch_switches_between_cron_and_one_time(api: ApiClient) -> None:
    create(api, "t1")

    once = api.request("PATCH", T1, {"runAt": "2026-11-28T06:00:00Z"}).body
    assert (once["cronExpression"], once["runAt"], once["nextRunAt"]) == (
        None,
        "2026-11-28T06:00:00Z",
        "2026-11-28T06:00:00Z",
    )
    cron = api.request("PATCH", T1, {"cronExpression": "0 12 * * *", "runAt": None}).body
    assert (cron["cronExpression"], cron["runAt"], cron["nextRunAt"]) == ("0 12 * * *", None, "2026-11-27T12:00:00Z")
    assert api.request("GET", T1).body["scheduleDescription"] == "At 12:00 (UTC)"


def test_run_at_is_stored_in_utc_seconds_even_while_disabled(api: ApiClient, stack: Stack) -> None:
    create(api, "t1", enabled=False)

    patched = api.request("PATCH", T1, {"runAt": "2026-12-24T18:00:00.750+01:00"}).body

    assert (patched["runAt"], patched["nextRunAt"], patched["enabled"]) == ("2026-12-24T17:00:00Z", None, False)
    assert api.request("GET", T1).body["runAt"] == "2026-12-24T17:00:00Z"
    stored = raw_trigger(stack, "t1")
    assert stored is not None
    assert (stored["run_at"], stored["schedule_version"]) == ("2026-12-24T17:00:00Z", 2)

    # The same instant written another way is no change of schedule.
    api.request("PATCH", T1, {"runAt": "2026-12-24T12:00:00.100-05:00"})
    stored = raw_trigger(stack, "t1")
    assert stored is not None
    assert (stored["run_at"], stored["schedule_version"]) == ("2026-12-24T17:00:00Z", 2)


def test_enabling_a_past_one_time_trigger_names_run_at(api: ApiClient, stack: Stack) -> None:
    api.request("POST", BASE, {"id": "once", "name": "Once", "runAt": "2026-11-26T16:00:00Z", "enabled": False})
    stack.clock.advance(2 * 3600)
    before = scan(stack, stack.settings.triggers_table)

    response = api.request("PATCH", trigger_path("once"), {"enabled": True})

    error = assert_error(response, 422, "validation_failed")
    assert error["details"][0]["field"] == "body.runAt"
    assert scan(stack, stack.settings.triggers_table) == before


# --- schedule state: nextRunAt and the sparse due index -----------------------------------------


def _assert_due(stack: Stack, at: str, version: int) -> None:
    stored = raw_trigger(stack, "t1")
    assert stored is not None
    shard = due_shard_for("acme", "t1", stack.settings.due_shard_count)
    assert 0 <= shard < stack.settings.due_shard_count
    assert (stored["next_run_at"], stored["due_at"], stored["due_shard"]) == (at, at, shard)
    assert stored["schedule_version"] == version
    assert "claim_name" not in stored
    assert due_index_entries(stack)["acme#t1"] == (shard, at)


def _assert_not_due(stack: Stack, version: int) -> None:
    stored = raw_trigger(stack, "t1")
    assert stored is not None
    assert not {"next_run_at", "due_at", "due_shard"} & stored.keys(), stored
    assert stored["schedule_version"] == version
    assert "acme#t1" not in due_index_entries(stack)


def test_enable_disable_and_reschedule_keep_next_run_and_due_index_right(api: ApiClient, stack: Stack) -> None:
    create(api, "t1")
    _assert_due(stack, "2026-11-27T09:00:00Z", 1)

    off = api.request("PATCH", T1, {"enabled": False}).body
    assert (off["enabled"], off["nextRunAt"]) == (False, None)
    _assert_not_due(stack, 2)
    assert api.request("GET", T1).body["upcomingRuns"] == []

    stack.clock.set(datetime(2026, 11, 27, 15, 0, tzinfo=UTC))
    on = api.request("PATCH", T1, {"enabled": True}).body
    assert on["nextRunAt"] == "2026-11-28T09:00:00Z"
    _assert_due(stack, "2026-11-28T09:00:00Z", 3)

    assert api.request("PATCH", T1, {"cronExpression": "*/20 * * * *"}).body["nextRunAt"] == "2026-11-27T15:20:00Z"
    _assert_due(stack, "2026-11-27T15:20:00Z", 4)

    api.request("PATCH", T1, {"cronExpression": "0 9 * * *", "cronTimezone": "America/New_York"})
    _assert_due(stack, "2026-11-28T14:00:00Z", 5)

    for unchanged in ({"name": "Renamed"}, {"enabled": True}, {"cronTimezone": "America/New_York"}):
        assert api.request("PATCH", T1, unchanged).status == 200
        _assert_due(stack, "2026-11-28T14:00:00Z", 5)

    api.request("PATCH", T1, {"runAt": "2026-12-01T10:00:00Z"})
    _assert_due(stack, "2026-12-01T10:00:00Z", 6)

    api.request("PATCH", T1, {"enabled": False, "cronExpression": "0 1 * * *"})
    _assert_not_due(stack, 7)


def test_created_disabled_is_not_in_the_due_index(api: ApiClient, stack: Stack) -> None:
    create(api, "t1", enabled=False)
    _assert_not_due(stack, 1)


# --- optimistic concurrency --------------------------------------------------------------------


@pytest.fixture
def atomic_items(monkeypatch: pytest.MonkeyPatch) -> None:
    """DynamoDB applies each single-item request atomically, condition included; moto takes no lock,
    so the test supplies that guarantee (what is under test is Sundial's use of the condition)."""
    lock = threading.RLock()
    for name in ("get_item", "put_item", "update_item", "delete_item"):
        original = getattr(DynamoDBBackend, name)

        def atomic(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with lock:
                return __original(self, *args, **kwargs)

        monkeypatch.setattr(DynamoDBBackend, name, atomic)


def _patch_concurrently(
    stack: Stack, patches: list[dict[str, Any]], barrier: threading.Barrier | None, monkeypatch: pytest.MonkeyPatch
) -> list[Trigger | ConflictError]:
    """Apply each patch from its own thread, through the use case the PATCH route calls.

    The powertools resolver keeps the current request on the module-level app (a Lambda process serves
    one request at a time), so concurrent requests are concurrent use-case calls, as in separate Lambdas.
    With a barrier every thread has read the trigger before any writes it.
    """
    load = trigger_store.load

    def load_then_wait(path: triggers.AgentPath, trigger_id: str) -> Any:
        record = load(path, trigger_id)
        if barrier is not None:
            barrier.wait()
        return record

    def apply(patch: dict[str, Any]) -> Trigger | ConflictError:
        try:
            return triggers.update_trigger(
                stack.deps,
                ALICE,
                triggers.AgentPath("acme", "website", "reporter"),
                "t1",
                TriggerPatch.model_validate(patch),
            )
        except ConflictError as conflict:
            return conflict

    with monkeypatch.context() as patched, ThreadPoolExecutor(max_workers=len(patches)) as pool:
        patched.setattr(trigger_store, "load", load_then_wait)
        return list(pool.map(apply, patches))


DISTINCT_FIELD_PATCHES: list[dict[str, Any]] = [
    {"name": "From writer 0"},
    {"description": "From writer 1"},
    {"messageTemplate": "From writer 2"},
    {"ref": "writer-3"},
    {"maxRetries": 4},
    {"retryDelaySeconds": 55},
    {"timeoutSeconds": 66},
    {"cronExpression": "7 7 * * *"},
]


def _assert_no_update_lost(
    api: ApiClient, stack: Stack, before: dict[str, Any], patches: list[dict[str, Any]], outcomes: list[Any]
) -> int:
    """Each patch either shows in the final state (applied) or left its field untouched (409)."""
    final = api.request("GET", T1).body
    applied = 0
    for patch, outcome in zip(patches, outcomes, strict=True):
        ((field, value),) = patch.items()
        if isinstance(outcome, ConflictError):
            assert final[field] == before[field], (patch, "a refused patch changed the trigger")
        else:
            applied += 1
            assert final[field] == value, (patch, "an accepted patch was lost")
    stored = raw_trigger(stack, "t1")
    assert stored is not None
    assert stored["revision"] == 1 + applied
    return applied


def test_two_concurrent_patches_one_applies_and_one_gets_409(
    api: ApiClient, stack: Stack, atomic_items: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api, "t1")
    before = api.request("GET", T1).body
    patches = [{"name": "From A"}, {"description": "From B"}]

    outcomes = _patch_concurrently(stack, patches, threading.Barrier(2, timeout=10), monkeypatch)

    assert sorted(type(outcome).__name__ for outcome in outcomes) == ["ConflictError", "Trigger"]
    assert _assert_no_update_lost(api, stack, before, patches, outcomes) == 1
    winner = next(outcome for outcome in outcomes if isinstance(outcome, Trigger))
    final = api.request("GET", T1).body
    assert {k: v for k, v in final.items() if k != "upcomingRuns"} == winner.model_dump(mode="json", by_alias=True)


def test_many_writers_who_read_the_same_revision_all_but_one_get_409(
    api: ApiClient, stack: Stack, atomic_items: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api, "t1")
    before = api.request("GET", T1).body
    barrier = threading.Barrier(len(DISTINCT_FIELD_PATCHES), timeout=10)

    outcomes = _patch_concurrently(stack, DISTINCT_FIELD_PATCHES, barrier, monkeypatch)

    assert _assert_no_update_lost(api, stack, before, DISTINCT_FIELD_PATCHES, outcomes) == 1


def test_free_running_concurrent_writers_never_lose_an_update(
    api: ApiClient, stack: Stack, atomic_items: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api, "t1")
    before = api.request("GET", T1).body

    outcomes = _patch_concurrently(stack, DISTINCT_FIELD_PATCHES, None, monkeypatch)

    assert _assert_no_update_lost(api, stack, before, DISTINCT_FIELD_PATCHES, outcomes) >= 1


def test_sequential_patches_from_a_stale_read_still_apply(api: ApiClient) -> None:
    """Optimistic concurrency is per request: a client need not send a revision to PATCH."""
    create(api, "t1")
    assert api.request("PATCH", T1, {"name": "One"}).status == 200
    assert api.request("PATCH", T1, {"description": "Two"}).status == 200
    body = api.request("GET", T1).body
    assert (body["name"], body["description"]) == ("One", "Two")


# --- DELETE ------------------------------------------------------------------------------------


def test_delete_cancels_open_invocations_then_removes_the_trigger(api: ApiClient, stack: Stack) -> None:
    create(api, "t1")
    pending = seed_invocation(stack, "t1", START, "pending")
    finished = seed_invocation(stack, "t1", START - timedelta(days=1), "completed")

    deleted = api.request("DELETE", T1)

    assert (deleted.status, deleted.body) == (204, None)
    assert raw_trigger(stack, "t1") is None
    pending.refresh()
    finished.refresh()
    assert (pending.status, finished.status) == ("cancelled", "completed")
    for method, body in (("GET", None), ("PATCH", {"name": "x"}), ("DELETE", None)):
        assert_error(api.request(method, T1, body), 404, "not_found")
    assert api.request("GET", BASE).body["data"] == []
    assert "acme#t1" not in due_index_entries(stack)


# --- upcoming runs and previews ----------------------------------------------------------------


def test_upcoming_runs_merge_the_agents_enabled_triggers_soonest_first(api: ApiClient) -> None:
    create(api, "daily", name="Daily")
    create(api, "alpha", name="Alpha", cronExpression="0 9 * * *")
    create(api, "six-hourly", name="Six-hourly", cronExpression="30 */6 * * *")
    api.request("POST", BASE, {"id": "once", "name": "Once", "runAt": "2026-11-27T07:00:00Z"})
    create(api, "paused", name="Paused", cronExpression="* * * * *", enabled=False)
    create(api, "other-agent", base=WRITER_BASE, cronExpression="* * * * *")

    runs = api.request("GET", f"{BASE}/upcoming-runs", query={"limit": 8}).body["data"]

    assert [(run["scheduledFor"], run["triggerId"], run["triggerName"]) for run in runs] == [
        ("2026-11-26T18:30:00Z", "six-hourly", "Six-hourly"),
        ("2026-11-27T00:30:00Z", "six-hourly", "Six-hourly"),
        ("2026-11-27T06:30:00Z", "six-hourly", "Six-hourly"),
        ("2026-11-27T07:00:00Z", "once", "Once"),
        ("2026-11-27T09:00:00Z", "alpha", "Alpha"),
        ("2026-11-27T09:00:00Z", "daily", "Daily"),
        ("2026-11-27T12:30:00Z", "six-hourly", "Six-hourly"),
        ("2026-11-27T18:30:00Z", "six-hourly", "Six-hourly"),
    ]
    assert len(api.request("GET", f"{BASE}/upcoming-runs").body["data"]) == 10
    assert len(api.request("GET", f"{BASE}/upcoming-runs", query={"limit": 2}).body["data"]) == 2
    assert api.request("GET", f"{WRITER_BASE}/upcoming-runs", query={"limit": 1}).body["data"][0]["triggerId"] == (
        "other-agent"
    )


def test_upcoming_runs_of_an_agent_without_triggers_is_empty(api: ApiClient) -> None:
    assert api.request("GET", f"{BASE}/upcoming-runs").body == {"data": []}


@pytest.mark.parametrize(
    ("request_body", "next_runs", "description"),
    [
        (
            {"cronExpression": "0 9 * * MON-FRI", "cronTimezone": "Europe/Berlin", "count": 3},
            ["2026-11-27T08:00:00Z", "2026-11-30T08:00:00Z", "2026-12-01T08:00:00Z"],
            "At 09:00, Monday through Friday (Europe/Berlin)",
        ),
        (
            {"cronExpression": "30 2 * * *", "cronTimezone": "America/New_York", "after": "2025-03-08T12:00:00Z"}
            | {"count": 2},
            ["2025-03-09T07:00:00Z", "2025-03-10T06:30:00Z"],
            "At 02:30 (America/New_York)",
        ),
        (
            {"cronExpression": "@hourly", "after": "2026-01-01T00:00:00+05:00", "count": 1},
            ["2025-12-31T20:00:00Z"],
            "Every hour (UTC)",
        ),
        ({"runAt": "2026-12-01T10:00:00+01:00"}, ["2026-12-01T09:00:00Z"], "Once at 2026-12-01T09:00:00Z"),
        ({"runAt": "2026-11-26T14:00:00Z"}, [], "Once at 2026-11-26T14:00:00Z"),
    ],
)
def test_schedule_preview(api: ApiClient, request_body: dict[str, Any], next_runs: list[str], description: str) -> None:
    response = api.request("POST", "/schedule-preview", request_body)

    assert response.status == 200, response.body
    assert response.body == {"nextRuns": next_runs, "scheduleDescription": description}


def test_schedule_preview_count_bounds_and_default(api: ApiClient) -> None:
    every_minute = {"cronExpression": "* * * * *"}
    default = api.request("POST", "/schedule-preview", every_minute).body["nextRuns"]
    assert default[0] == "2026-11-26T15:01:00Z"
    assert len(default) == 10
    assert len(api.request("POST", "/schedule-preview", {**every_minute, "count": 1}).body["nextRuns"]) == 1
    assert len(api.request("POST", "/schedule-preview", {**every_minute, "count": 100}).body["nextRuns"]) == 100
    for count in (0, 101):
        error = assert_error(
            api.request("POST", "/schedule-preview", {**every_minute, "count": count}), 422, "validation_failed"
        )
        assert error["details"][0]["field"] == "body.count"


# --- invocations (read side) -------------------------------------------------------------------


@pytest.fixture
def history(api: ApiClient, stack: Stack) -> list[str]:
    """Six invocations of t1 on consecutive days, newest (pending) last; returns their ids oldest first."""
    create(api, "t1")
    statuses = ["completed", "failed", "completed", "cancelled", "skipped", "pending"]
    attempts = [
        {
            "number": 1,
            "startedAt": "2026-11-20T09:00:01Z",
            "endedAt": "2026-11-20T09:00:05Z",
            "outcome": "succeeded",
            "httpStatus": 200,
            "error": None,
            "conversationId": "conv-1",
        }
    ]
    return [
        seed_invocation(
            stack, "t1", datetime(2026, 11, 20 + day, 9, tzinfo=UTC), status, attempts=attempts if day == 0 else None
        ).invocation_id
        for day, status in enumerate(statuses)
    ]


def _invocation_ids(api: ApiClient, **query: Any) -> list[str]:
    response = api.request("GET", f"{T1}/invocations", query=query)
    assert response.status == 200, response.body
    return [item["id"] for item in response.body["data"]]


def test_invocations_are_listed_newest_first(api: ApiClient, history: list[str]) -> None:
    assert _invocation_ids(api) == history[::-1]


def test_invocations_filter_by_status_and_scheduled_range(api: ApiClient, history: list[str]) -> None:
    assert _invocation_ids(api, status="completed") == [history[2], history[0]]
    assert _invocation_ids(api, status="pending") == [history[5]]
    assert _invocation_ids(api, **{"from": "2026-11-21T00:00:00Z", "to": "2026-11-23T09:00:00Z"}) == [
        history[3],
        history[2],
        history[1],
    ]
    assert _invocation_ids(api, **{"from": "2026-11-24T10:00:00+01:00"}) == [history[5], history[4]]
    assert _invocation_ids(api, to="2026-11-20T09:00:00Z") == [history[0]]
    assert _invocation_ids(api, status="failed", **{"from": "2026-11-22T00:00:00Z"}) == []


@pytest.mark.parametrize(
    ("limit", "query"), [(2, {}), (1, {"status": "completed"}), (4, {"to": "2026-11-24T09:00:00Z"})]
)
def test_invocation_pages_are_complete_and_without_duplicates(
    api: ApiClient, history: list[str], limit: int, query: dict[str, str]
) -> None:
    pages = _walk(api, f"{T1}/invocations", limit, **query)

    flat = [item for page in pages for item in page]
    assert flat == _invocation_ids(api, **query)
    assert len(set(flat)) == len(flat)
    assert all(len(page) == limit for page in pages[:-1])


def test_get_invocation_with_its_attempts(api: ApiClient, history: list[str]) -> None:
    response = api.request("GET", f"{T1}/invocations/{history[0]}")

    assert response.status == 200, response.body
    body = response.body
    assert (body["id"], body["triggerId"], body["status"], body["kind"]) == (history[0], "t1", "completed", "scheduled")
    assert body["scheduledFor"] == "2026-11-20T09:00:00Z"
    assert body["attempts"] == [
        {
            "number": 1,
            "startedAt": "2026-11-20T09:00:01Z",
            "endedAt": "2026-11-20T09:00:05Z",
            "outcome": "succeeded",
            "httpStatus": 200,
            "error": None,
            "conversationId": "conv-1",
            "afterCancel": False,
        }
    ]
    listed = next(item for item in api.request("GET", f"{T1}/invocations").body["data"] if item["id"] == history[0])
    assert listed == body


def test_unknown_invocation_or_wrong_parent_is_404(api: ApiClient, history: list[str]) -> None:
    create(api, "t2")
    assert_error(api.request("GET", f"{T1}/invocations/20261120T090000Z-nope"), 404, "not_found")
    assert_error(api.request("GET", f"{trigger_path('t2')}/invocations/{history[0]}"), 404, "not_found")
    assert_error(api.request("GET", f"{trigger_path('t1', WRITER_BASE)}/invocations/{history[0]}"), 404, "not_found")
    assert_error(api.request("GET", f"{trigger_path('missing')}/invocations"), 404, "not_found")


# --- response formats --------------------------------------------------------------------------


def test_every_timestamp_in_responses_is_utc_with_z(api: ApiClient, history: list[str]) -> None:
    create(api, "offset", runAt="2026-12-01T10:00:00+05:30", cronExpression=None)
    responses = [
        api.request("GET", trigger_path("offset")),
        api.request("PATCH", trigger_path("offset"), {"runAt": "2026-12-02T10:00:00.5-08:00"}),
        api.request("GET", BASE),
        api.request("GET", PROJECT_BASE),
        api.request("GET", f"{BASE}/upcoming-runs"),
        api.request("GET", f"{T1}/invocations"),
        api.request("GET", f"{T1}/invocations/{history[0]}"),
        api.request("POST", "/schedule-preview", {"cronExpression": "0 9 * * *", "after": "2026-12-01T00:00:00+09:00"}),
    ]
    checked = 0
    for response in responses:
        assert response.status == 200, response.body
        checked += assert_utc_timestamps(response.body)
    assert checked > 40
    assert responses[1].body["runAt"] == "2026-12-02T18:00:00Z"


def test_openapi_document_is_served_without_credentials(api: ApiClient) -> None:
    response = api.request("GET", "/openapi.json", claims=None)

    assert response.status == 200
    assert response.body["openapi"].startswith("3.")
    assert "/tenants/{tenant_id}/projects/{project_id}/agents/{agent_id}/scheduled-triggers" in response.body["paths"]


def test_a_preview_near_the_end_of_the_calendar_is_refused_naming_the_field(api: ApiClient) -> None:
    """Instants stop at year 8999, so that a schedule, its jitter and its next occurrence fit the calendar."""
    response = api.request(
        "POST", "/schedule-preview", {"cronExpression": "* * * * *", "after": "9999-12-31T23:58:30Z", "count": 5}
    )

    error = assert_error(response, 422, "validation_failed")
    assert error["details"][0]["field"] == "body.after"
    last = api.request(
        "POST", "/schedule-preview", {"cronExpression": "* * * * *", "after": "8999-12-31T23:58:30Z", "count": 2}
    )
    assert last.status == 200, last.body
    assert last.body["nextRuns"] == ["8999-12-31T23:59:00Z", "9000-01-01T00:00:00Z"]

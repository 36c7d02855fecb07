"""Malformed requests, table-driven: each gets its documented 4xx in the standard error shape, the
error names the field at fault, and nothing stored changes (SPEC section 3: 400, 413, 415, 422)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import api_handler
import pytest
from sundial.contracts.api import TriggerCreate
from sundial.domain.auth import Principal
from sundial.services import triggers

from tests.api_support import PROJECT_BASE, assert_error, scan, seed_invocation, trigger_path
from tests.conftest import BASE, EVENTS, START, ApiClient, ApiResponse, Stack, lambda_context

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

T1 = trigger_path("t1")
VALID = {"name": "Nightly", "cronExpression": "0 2 * * *"}
NO_BODY = object()


def body(**changes: Any) -> dict[str, Any]:
    """A valid create body with some fields changed (a value of NO_BODY drops the field)."""
    merged = {**VALID, **changes}
    return {name: value for name, value in merged.items() if value is not NO_BODY}


def nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def cursor_of(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


@dataclass(frozen=True)
class Bad:
    """One malformed request and what it must get: status, error code, and the field named."""

    method: str
    path: str
    status: int
    code: str
    field: str
    body: Any = NO_BODY
    raw: str | None = None
    query: dict[str, str] | None = None
    headers: dict[str, str] | None = None


def bad_json(raw: str, path: str = BASE, method: str = "POST") -> Bad:
    return Bad(method, path, 400, "bad_request", "body", raw=raw)


def invalid(field: str, request_body: Any, path: str = BASE, method: str = "POST") -> Bad:
    return Bad(method, path, 422, "validation_failed", field, body=request_body)


def contradictory(request_body: Any, path: str = BASE, method: str = "POST") -> Bad:
    return Bad(method, path, 400, "bad_request", "body.cronExpression", body=request_body)


def bad_query(field: str, query: dict[str, str], path: str = BASE, status: int = 422) -> Bad:
    code = "validation_failed" if status == 422 else "bad_request"
    return Bad("GET", path, status, code, field, query=query)


CASES: dict[str, Bad] = {
    # Bodies that are not a JSON object at all: 400.
    "create-malformed-json": bad_json("{bad"),
    "create-truncated-json": bad_json('{"name": "Nightly", "cronExpression": "0 2 * * *"'),
    "create-trailing-garbage": bad_json('{"name": "Nightly"} x'),
    "create-array-body": bad_json("[]"),
    "create-string-body": bad_json('"Nightly"'),
    "create-number-body": bad_json("42"),
    "create-null-body": bad_json("null"),
    "create-empty-body": bad_json(""),
    "create-nan": bad_json('{"name": "Nightly", "cronExpression": "0 2 * * *", "payload": {"x": NaN}}'),
    "create-infinity": bad_json('{"name": "Nightly", "cronExpression": "0 2 * * *", "maxRetries": Infinity}'),
    "create-float-overflow": bad_json('{"name": "Nightly", "cronExpression": "0 2 * * *", "payload": {"x": 1e999}}'),
    "create-5000-digit-int": bad_json(
        '{"name": "Nightly", "cronExpression": "0 2 * * *", "maxRetries": ' + "9" * 5000 + "}"
    ),
    "create-nested-20000-deep": bad_json("[" * 20000 + "]" * 20000),
    # Media type and size.
    "create-body-over-64KiB": Bad("POST", BASE, 413, "payload_too_large", "body", body=body(description="d" * 70_000)),
    "create-text-plain": Bad(
        "POST", BASE, 415, "unsupported_media_type", "body", body=VALID, headers={"content-type": "text/plain"}
    ),
    "create-form-encoded": Bad(
        "POST",
        BASE,
        415,
        "unsupported_media_type",
        "body",
        raw="name=Nightly",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    # Field rules: 422 naming the field.
    "create-unknown-field": invalid("body.colour", body(colour="blue")),
    "create-snake-case-field": invalid("body.cron_expression", {"name": "Nightly", "cron_expression": "0 2 * * *"}),
    "create-snake-case-duplicate": invalid("body.cron_timezone", body(cronTimezone="UTC", cron_timezone="Asia/Tokyo")),
    "create-missing-name": invalid("body.name", body(name=NO_BODY)),
    "create-name-only-spaces": invalid("body.name", body(name="   ")),
    "create-name-257-chars": invalid("body.name", body(name="n" * 257)),
    "create-name-number": invalid("body.name", body(name=7)),
    "create-name-lone-surrogate": Bad(
        "POST", BASE, 422, "validation_failed", "body.name", raw='{"name": "\\ud800", "cronExpression": "0 2 * * *"}'
    ),
    # A lone surrogate is valid JSON but no UTF-8 can carry it: stored, every run would fail (SPEC §6).
    "create-payload-lone-surrogate": Bad(
        "POST",
        BASE,
        422,
        "validation_failed",
        "body.payload",
        raw='{"name": "n", "cronExpression": "0 2 * * *", "payload": {"k": "\\ud800"}}',
    ),
    "create-payload-nested-surrogate": Bad(
        "POST",
        BASE,
        422,
        "validation_failed",
        "body.payload",
        raw='{"name": "n", "cronExpression": "0 2 * * *", "payload": {"a": [1, {"b": "x\\udfff"}]}}',
    ),
    "create-payload-surrogate-key": Bad(
        "POST",
        BASE,
        422,
        "validation_failed",
        "body.payload",
        raw='{"name": "n", "cronExpression": "0 2 * * *", "payload": {"\\ud83d": 1}}',
    ),
    "create-description-lone-surrogate": Bad(
        "POST",
        BASE,
        422,
        "validation_failed",
        "body.description",
        raw='{"name": "n", "cronExpression": "0 2 * * *", "description": "\\ud800"}',
    ),
    "create-template-lone-surrogate": Bad(
        "POST",
        BASE,
        422,
        "validation_failed",
        "body.messageTemplate",
        raw='{"name": "n", "cronExpression": "0 2 * * *", "messageTemplate": "hi \\udc00"}',
    ),
    "create-ref-lone-surrogate": Bad(
        "POST",
        BASE,
        422,
        "validation_failed",
        "body.ref",
        raw='{"name": "n", "cronExpression": "0 2 * * *", "ref": "\\ud800"}',
    ),
    "patch-payload-lone-surrogate": Bad(
        "PATCH", f"{BASE}/t1", 422, "validation_failed", "body.payload", raw='{"payload": {"k": "\\ud800"}}'
    ),
    "create-description-2049-chars": invalid("body.description", body(description="d" * 2049)),
    "create-enabled-string": invalid("body.enabled", body(enabled="true")),
    "create-enabled-number": invalid("body.enabled", body(enabled=1)),
    "create-enabled-null": invalid("body.enabled", body(enabled=None)),
    "create-max-retries-11": invalid("body.maxRetries", body(maxRetries=11)),
    "create-max-retries-negative": invalid("body.maxRetries", body(maxRetries=-1)),
    "create-max-retries-fraction": invalid("body.maxRetries", body(maxRetries=1.5)),
    "create-max-retries-string": invalid("body.maxRetries", body(maxRetries="1")),
    "create-max-retries-huge": invalid("body.maxRetries", body(maxRetries=10**30)),
    "create-retry-delay-9": invalid("body.retryDelaySeconds", body(retryDelaySeconds=9)),
    "create-retry-delay-3601": invalid("body.retryDelaySeconds", body(retryDelaySeconds=3601)),
    "create-timeout-29": invalid("body.timeoutSeconds", body(timeoutSeconds=29)),
    "create-timeout-781": invalid("body.timeoutSeconds", body(timeoutSeconds=781)),
    "create-catch-up-604801": invalid("body.catchUpWindowSeconds", body(catchUpWindowSeconds=604801)),
    "create-catch-up-boolean": invalid("body.catchUpWindowSeconds", body(catchUpWindowSeconds=True)),
    "create-overlap-policy-unknown": invalid("body.overlapPolicy", body(overlapPolicy="never")),
    "create-pause-on-failure-not-a-bool": invalid("body.pauseOnFailure", body(pauseOnFailure="yes")),
    "create-payload-list": invalid("body.payload", body(payload=[1, 2])),
    "create-payload-string": invalid("body.payload", body(payload="{}")),
    "create-payload-over-32KiB": invalid("body.payload", body(payload={"text": "p" * 33_000})),
    "create-payload-40-levels": invalid("body.payload", body(payload=nested(40))),
    "create-template-over-16KiB": invalid("body.messageTemplate", body(messageTemplate="m" * (16 * 1024 + 1))),
    "create-run-as-257-chars": invalid("body.runAsUserId", body(runAsUserId="u" * 257)),
    "create-run-as-system": invalid("body.runAsUserId", body(runAsUserId="system")),
    "create-run-as-apikey": invalid("body.runAsUserId", body(runAsUserId="apikey:deploy-bot")),
    "create-ref-with-space": invalid("body.ref", body(ref="my branch")),
    "create-ref-with-newline": invalid("body.ref", body(ref="main\n")),
    "create-ref-with-control-char": invalid("body.ref", body(ref="ma\x07in")),
    "create-ref-with-nbsp": invalid("body.ref", body(ref="main\u00a0x")),
    "create-ref-empty": invalid("body.ref", body(ref="")),
    "create-ref-257-chars": invalid("body.ref", body(ref="r" * 257)),
    "create-cron-minute-61": invalid("body.cronExpression", body(cronExpression="61 * * * *")),
    "create-cron-six-fields": invalid("body.cronExpression", body(cronExpression="0 0 2 * * *")),
    "create-cron-never-fires": invalid("body.cronExpression", body(cronExpression="0 0 30 2 *")),
    "create-cron-unknown-macro": invalid("body.cronExpression", body(cronExpression="@every_5m")),
    "create-cron-quartz-extension": invalid("body.cronExpression", body(cronExpression="0 9 ? * MON#2")),
    "create-cron-empty": invalid("body.cronExpression", body(cronExpression="")),
    "create-cron-number": invalid("body.cronExpression", body(cronExpression=5)),
    "create-zone-unknown": invalid("body.cronTimezone", body(cronTimezone="Mars/Olympus_Mons")),
    "create-zone-path": invalid("body.cronTimezone", body(cronTimezone="../../etc/passwd")),
    "create-zone-null": invalid("body.cronTimezone", body(cronTimezone=None)),
    "create-run-at-past": invalid("body.runAt", body(cronExpression=NO_BODY, runAt="2026-11-26T14:58:00Z")),
    "create-run-at-naive": invalid("body.runAt", body(cronExpression=NO_BODY, runAt="2026-12-01T10:00:00")),
    "create-run-at-number": invalid("body.runAt", body(cronExpression=NO_BODY, runAt=1795683600)),
    "create-run-at-words": invalid("body.runAt", body(cronExpression=NO_BODY, runAt="tomorrow at nine")),
    "create-run-at-year-9999": invalid("body.runAt", body(cronExpression=NO_BODY, runAt="9999-12-31T23:59:59-05:00")),
    "create-id-reserved": invalid("body.id", body(id="upcoming-runs")),
    "create-id-65-chars": invalid("body.id", body(id="i" * 65)),
    "create-id-bad-chars": invalid("body.id", body(id="weekly.report")),
    "create-id-empty": invalid("body.id", body(id="")),
    # Contradictory fields: 400.
    "create-cron-and-run-at": contradictory(body(runAt="2026-12-01T10:00:00Z")),
    "create-neither-cron-nor-run-at": contradictory(body(cronExpression=NO_BODY)),
    "create-both-null": contradictory(body(cronExpression=None, runAt=None)),
    # State conflicts.
    "create-duplicate-id": Bad("POST", BASE, 409, "conflict", "id", body=body(id="t1")),
    # Path ids.
    "create-bad-agent-id": invalid("path.agent_id", VALID, path=BASE.replace("reporter", "report.er")),
    "create-65-char-project-id": invalid("path.project_id", VALID, path=BASE.replace("website", "p" * 65)),
    "get-bad-trigger-id": Bad("GET", trigger_path("t1;drop"), 422, "validation_failed", "path.trigger_id"),
    "get-65-char-trigger-id": Bad("GET", trigger_path("t" * 65), 422, "validation_failed", "path.trigger_id"),
    # PATCH.
    "patch-empty-object": Bad("PATCH", T1, 400, "bad_request", "body", body={}),
    "patch-no-body": Bad("PATCH", T1, 400, "bad_request", "body"),
    "patch-array-body": bad_json("[]", T1, "PATCH"),
    "patch-malformed-json": bad_json('{"name": ', T1, "PATCH"),
    "patch-unknown-field": invalid("body.colour", {"colour": "blue"}, T1, "PATCH"),
    "patch-id": invalid("body.id", {"id": "t2"}, T1, "PATCH"),
    "patch-snake-case-field": invalid("body.max_retries", {"max_retries": 3}, T1, "PATCH"),
    "patch-read-only-next-run-at": invalid("body.nextRunAt", {"nextRunAt": "2026-12-01T00:00:00Z"}, T1, "PATCH"),
    "patch-read-only-created-by": invalid("body.createdBy", {"createdBy": "mallory"}, T1, "PATCH"),
    "patch-null-name": invalid("body.name", {"name": None}, T1, "PATCH"),
    "patch-null-enabled": invalid("body.enabled", {"enabled": None}, T1, "PATCH"),
    "patch-null-zone": invalid("body.cronTimezone", {"cronTimezone": None}, T1, "PATCH"),
    "patch-null-max-retries": invalid("body.maxRetries", {"maxRetries": None}, T1, "PATCH"),
    "patch-null-ref": invalid("body.ref", {"ref": None}, T1, "PATCH"),
    "patch-null-overlap-policy": invalid("body.overlapPolicy", {"overlapPolicy": None}, T1, "PATCH"),
    "patch-null-pause-on-failure": invalid("body.pauseOnFailure", {"pauseOnFailure": None}, T1, "PATCH"),
    "patch-null-catch-up": invalid("body.catchUpWindowSeconds", {"catchUpWindowSeconds": None}, T1, "PATCH"),
    "patch-ref-with-tab": invalid("body.ref", {"ref": "a\tb"}, T1, "PATCH"),
    "patch-timeout-out-of-range": invalid("body.timeoutSeconds", {"timeoutSeconds": 0}, T1, "PATCH"),
    "patch-bad-cron": invalid("body.cronExpression", {"cronExpression": "* * * *"}, T1, "PATCH"),
    "patch-bad-zone": invalid("body.cronTimezone", {"cronTimezone": "Europe/Atlantis"}, T1, "PATCH"),
    "patch-run-at-past": invalid("body.runAt", {"runAt": "2020-01-01T00:00:00Z"}, T1, "PATCH"),
    "patch-run-as-system": invalid("body.runAsUserId", {"runAsUserId": "system"}, T1, "PATCH"),
    "patch-cron-and-run-at": contradictory(
        {"cronExpression": "0 1 * * *", "runAt": "2026-12-01T10:00:00Z"}, T1, "PATCH"
    ),
    "patch-cron-null-alone": contradictory({"cronExpression": None}, T1, "PATCH"),
    "patch-over-64KiB": Bad("PATCH", T1, 413, "payload_too_large", "body", body={"description": "d" * 70_000}),
    # Query parameters.
    "list-limit-letters": bad_query("query.limit", {"limit": "abc"}),
    "list-limit-zero": bad_query("query.limit", {"limit": "0"}),
    "list-limit-101": bad_query("query.limit", {"limit": "101"}),
    "list-limit-fraction": bad_query("query.limit", {"limit": "2.5"}),
    "list-cursor-garbage": bad_query("cursor", {"cursor": "not-a-cursor"}, status=400),
    "list-cursor-empty": bad_query("query.cursor", {"cursor": ""}),
    "list-cursor-wrong-keys": bad_query("cursor", {"cursor": cursor_of({"pk": "acme#t1"})}, status=400),
    "list-cursor-other-project": bad_query(
        "cursor",
        {"cursor": cursor_of({"agent_trigger": "reporter#t1", "pk": "acme#t1", "project_key": "acme#intranet"})},
        status=400,
    ),
    "project-list-limit-negative": bad_query("query.limit", {"limit": "-5"}, PROJECT_BASE),
    "upcoming-limit-zero": bad_query("query.limit", {"limit": "0"}, f"{BASE}/upcoming-runs"),
    "upcoming-limit-101": bad_query("query.limit", {"limit": "101"}, f"{BASE}/upcoming-runs"),
    "invocations-bad-status": bad_query("query.status", {"status": "done"}, f"{T1}/invocations"),
    "invocations-bad-from": bad_query("query.from", {"from": "yesterday"}, f"{T1}/invocations"),
    "invocations-naive-to": bad_query("query.to", {"to": "2026-11-26T00:00:00"}, f"{T1}/invocations"),
    "invocations-limit-letters": bad_query("query.limit", {"limit": "ten"}, f"{T1}/invocations"),
    "invocations-cursor-garbage": bad_query("cursor", {"cursor": "%%%"}, f"{T1}/invocations", status=400),
    "invocation-bad-id": Bad("GET", f"{T1}/invocations/bad.id", 422, "validation_failed", "path.invocation_id"),
    # Run now.
    "run-idempotency-key-too-long": Bad(
        "POST", f"{T1}/run", 422, "validation_failed", "header.idempotency-key", headers={"Idempotency-Key": "k" * 257}
    ),
    # Schedule preview.
    "preview-count-zero": invalid("body.count", {"cronExpression": "* * * * *", "count": 0}, "/schedule-preview"),
    "preview-count-101": invalid("body.count", {"cronExpression": "* * * * *", "count": 101}, "/schedule-preview"),
    "preview-count-string": invalid("body.count", {"cronExpression": "* * * * *", "count": "5"}, "/schedule-preview"),
    "preview-after-naive": invalid(
        "body.after", {"cronExpression": "* * * * *", "after": "2026-01-01T00:00"}, "/schedule-preview"
    ),
    "preview-bad-cron": invalid("body.cronExpression", {"cronExpression": "* * * * * *"}, "/schedule-preview"),
    "preview-bad-zone": invalid(
        "body.cronTimezone", {"cronExpression": "0 9 * * *", "cronTimezone": "CEST"}, "/schedule-preview"
    ),
    "preview-snake-case-field": invalid("body.cron_expression", {"cron_expression": "0 9 * * *"}, "/schedule-preview"),
    "preview-unknown-field": invalid(
        "body.timezone", {"cronExpression": "0 9 * * *", "timezone": "UTC"}, "/schedule-preview"
    ),
    "preview-neither": contradictory({"count": 3}, "/schedule-preview"),
    "preview-both": contradictory(
        {"cronExpression": "0 9 * * *", "runAt": "2026-12-01T10:00:00Z"}, "/schedule-preview"
    ),
    "preview-malformed-json": bad_json("{", "/schedule-preview"),
    # Instants with no UTC equivalent (year 1 east of Greenwich, year 9999 west of it).
    "invocations-from-before-year-1-utc": bad_query(
        "query.from", {"from": "0001-01-01T00:00:00+01:00"}, f"{T1}/invocations"
    ),
    "preview-after-before-year-1-utc": invalid(
        "body.after", {"cronExpression": "* * * * *", "after": "0001-01-01T00:00:00+01:00"}, "/schedule-preview"
    ),
    "preview-run-at-after-year-9999-utc": invalid(
        "body.runAt", {"runAt": "9999-12-31T23:59:59-01:00"}, "/schedule-preview"
    ),
}


@pytest.fixture
def pending(stack: Stack) -> str:
    """Trigger t1 with a pending invocation; returns the invocation's id."""
    triggers.create_trigger(
        stack.deps,
        Principal("alice", "acme", frozenset({"editor"})),
        triggers.AgentPath("acme", "website", "reporter"),
        TriggerCreate.model_validate({"id": "t1", **VALID}),
    )
    return seed_invocation(stack, "t1", START - timedelta(minutes=1), "pending").invocation_id


def _stored(stack: Stack) -> tuple[Any, ...]:
    return (
        scan(stack, stack.settings.triggers_table),
        scan(stack, stack.settings.invocations_table),
        stack.sfn.list_executions(stateMachineArn=stack.settings.state_machine_arn)["executions"],
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_malformed_request_is_refused_naming_the_field(api: ApiClient, stack: Stack, pending: str, case: Bad) -> None:
    before = _stored(stack)

    response = api.request(
        case.method,
        case.path,
        None if case.body is NO_BODY else case.body,
        raw_body=case.raw,
        query=case.query,
        headers=case.headers,
    )

    error = assert_error(response, case.status, case.code)
    named = [detail["field"] for detail in error["details"]]
    assert case.field in named or case.field in error["message"], error
    assert _stored(stack) == before, "a refused request changed stored data"


def test_the_table_has_at_least_forty_cases() -> None:
    assert len(CASES) >= 40
    assert {case.status for case in CASES.values()} == {400, 409, 413, 415, 422}


def _invoke_raw(event_changes: dict[str, Any]) -> ApiResponse:
    event = json.loads((EVENTS / "api_create_trigger.json").read_text())
    event.update(event_changes)
    result = api_handler.lambda_handler(event, lambda_context())
    return ApiResponse(result["statusCode"], json.loads(result["body"]), result.get("headers", {}))


def test_base64_body_that_is_not_utf8_is_400(api: ApiClient, stack: Stack, pending: str) -> None:
    before = _stored(stack)
    response = _invoke_raw({"body": base64.b64encode(b'{"name": "\xff\xfe"}').decode(), "isBase64Encoded": True})
    error = assert_error(response, 400, "bad_request")
    assert error["details"] == [{"field": "body", "message": "is not UTF-8"}]
    assert _stored(stack) == before


def test_base64_body_over_the_limit_is_413(api: ApiClient, stack: Stack, pending: str) -> None:
    encoded = base64.b64encode(json.dumps(body(description="d" * 70_000)).encode()).decode()
    assert_error(_invoke_raw({"body": encoded, "isBase64Encoded": True}), 413, "payload_too_large")


def test_base64_json_body_is_accepted(api: ApiClient, stack: Stack, pending: str) -> None:
    encoded = base64.b64encode(json.dumps(body(id="b64", name="Zeitplan ✓")).encode()).decode()
    response = _invoke_raw({"body": encoded, "isBase64Encoded": True})
    assert response.status == 201, response.body
    assert response.body["name"] == "Zeitplan ✓"


def test_a_body_just_under_the_limits_is_accepted(api: ApiClient, pending: str) -> None:
    """The limits are where the spec puts them, not lower: 32 KiB of payload, 16 KiB of template."""
    payload = {"text": "p" * (32 * 1024 - len('{"text":""}'))}
    response = api.request(
        "POST", BASE, body(id="big", payload=payload, messageTemplate="m" * 16 * 1024, description="d" * 2048)
    )
    assert response.status == 201, response.body
    assert response.body["payload"] == payload

"""Cascades started by the platform's lifecycle events (SPEC §7, docs/events.md "Platform events").

The samples in events/ go through the handler the template's rule targets, against moto and the
same seeded tenant as the admin routes' tests; the rule's pattern is checked by EventBridge's own
matcher (moto's TestEventPattern) on the samples and on near misses.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import boto3
import pytest
from sundial.contracts.platform_events import SCHEMA_VERSION, PlatformEventError
from sundial.domain.errors import ConflictError
from sundial.store.records import CascadeRecord, TriggerRecord, cascade_pk

from sundial_local.template import load_template
from tests.api_support import DAILY, assert_error, raw_trigger
from tests.cascade_support import SCOPES, assert_cascaded, create, drive, run_now_everywhere, seed_scopes
from tests.conftest import BASE, EVENTS, ApiClient, Stack, lambda_context, token_claims
from tests.template_support import transform_template

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

SAMPLES = {
    "project": "platform_project_deleted.json",
    "agent": "platform_agent_deleted.json",
    "ref": "platform_branch_deleted.json",
    "user": "platform_user_removed.json",
}
# Each sample, pointed at the scope SCOPES seeds (the samples name the sample trigger's own scopes).
SEEDED_SCOPE = {
    "project": {},
    "agent": {},
    "ref": {"ref": "feature/x"},
    "user": {"userId": "bob"},
}


def sample(kind: str, **detail: Any) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / SAMPLES[kind]).read_text())
    event["detail"].update(detail)
    return event


def deliver(stack: Stack, monkeypatch: pytest.MonkeyPatch, event: dict[str, Any]) -> str:
    import cascade_handler

    monkeypatch.setattr(cascade_handler, "deps", lambda: stack.deps)
    accepted = cascade_handler.platform_event_handler(event, lambda_context("sundial-platform-events"))
    return str(accepted["cascadeId"])


def cascade_executions(stack: Stack) -> list[dict[str, Any]]:
    arn = stack.settings.cascade_state_machine_arn
    found: list[dict[str, Any]] = stack.sfn.list_executions(stateMachineArn=arn)["executions"]
    return found


def everything_stored(stack: Stack) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = stack.dynamodb.scan(TableName=stack.settings.triggers_table)["Items"]
    return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))


@pytest.mark.parametrize("kind", SAMPLES)
def test_each_event_deletes_its_scope_cancels_its_runs_and_stops_its_executions(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch, kind: str
) -> None:
    _, _, expected = SCOPES[kind]
    seed_scopes(api)
    runs = run_now_everywhere(api)

    cascade_id = deliver(stack, monkeypatch, sample(kind, **SEEDED_SCOPE[kind]))
    [execution] = cascade_executions(stack)
    assert execution["name"] == cascade_id
    drive(stack, monkeypatch, "acme", cascade_id)

    progress = api.request("GET", f"/tenants/acme/cascades/{cascade_id}", claims=token_claims("carol", "[admin]"))
    body = progress.body
    assert (body["state"], body["scope"], body["found"], body["deleted"]) == (
        "completed",
        kind,
        len(expected),
        len(expected),
    )
    assert (body["invocationsCancelled"], body["executionsStopped"]) == (len(expected), len(expected))
    assert CascadeRecord.get(cascade_pk("acme", cascade_id)).origin == "event"
    assert_cascaded(stack, cascade_id, runs, expected)


def test_a_repeated_event_finds_the_first_cascade_and_does_nothing_new(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api, BASE, "daily")
    event = sample("project")
    first = deliver(stack, monkeypatch, event)
    drive(stack, monkeypatch, "acme", first)
    create(api, BASE, "daily")  # after the cascade: a new trigger, which the repeat must leave alone

    redelivered = deliver(stack, monkeypatch, event)
    republished = deliver(stack, monkeypatch, {**event, "id": "another-envelope-of-the-same-deletion"})

    assert redelivered == republished == first
    assert len(cascade_executions(stack)) == 1
    assert raw_trigger(stack, "daily") is not None
    record = CascadeRecord.get(cascade_pk("acme", first))
    assert (record.found, record.deleted, record.state) == (1, 1, "completed")


def test_without_an_event_id_the_envelope_id_keys_the_cascade(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    event = sample("agent")
    del event["detail"]["eventId"]
    retried = copy.deepcopy(event)

    assert deliver(stack, monkeypatch, event) == deliver(stack, monkeypatch, retried)
    assert deliver(stack, monkeypatch, {**event, "id": "a-second-publication"}) != deliver(stack, monkeypatch, event)


def test_a_create_racing_an_events_cascade_is_refused_until_it_completes(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    cascade_id = deliver(stack, monkeypatch, sample("agent"))

    refused = api.request("POST", BASE, {"id": "late", **DAILY})
    assert cascade_id in assert_error(refused, 409, "conflict")["message"]

    drive(stack, monkeypatch, "acme", cascade_id)
    assert api.request("POST", BASE, {"id": "late", **DAILY}).status == 201
    assert TriggerRecord.get("acme#late", consistent_read=True).next_run_at is not None


BAD_EVENTS = {
    "detail.projectId: Field required": lambda event: event["detail"].pop("projectId"),
    "detail.tenantId: String should match pattern": lambda event: event["detail"].update(tenantId="acme#globex"),
    "detail.schemaVersion: Input should be 1": lambda event: event["detail"].update(schemaVersion=2),
    "detail.projectId: Input should be a valid string": lambda event: event["detail"].update(projectId=7),
    "detail-type: Input should be": lambda event: event.update({"detail-type": "ProjectRenamed"}),
    "detail: Input should be a valid dictionary": lambda event: event.update(detail="website"),
    "id: Field required": lambda event: event.pop("id"),
}


@pytest.mark.parametrize("message", BAD_EVENTS)
def test_an_event_it_cannot_read_fails_naming_the_field_and_touches_nothing(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch, message: str
) -> None:
    """The handler's failure is what sends the event, after Lambda's retries, to the dead-letter queue."""
    seed_scopes(api)
    globex = token_claims("gina", "[admin]", tenant="globex")
    assert (
        api.request("POST", BASE.replace("/acme/", "/globex/"), {"id": "theirs", **DAILY}, claims=globex).status == 201
    )
    before = everything_stored(stack)
    event = sample("project")
    BAD_EVENTS[message](event)

    with pytest.raises(PlatformEventError, match=f"^{message}"):
        deliver(stack, monkeypatch, event)

    assert everything_stored(stack) == before
    assert cascade_executions(stack) == []


def test_an_event_id_reused_for_another_scope_fails_and_starts_nothing(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api, BASE, "daily")
    first = deliver(stack, monkeypatch, sample("agent", eventId="deletion-1"))

    with pytest.raises(ConflictError, match="another scope"):
        deliver(stack, monkeypatch, sample("project", eventId="deletion-1"))

    assert [execution["name"] for execution in cascade_executions(stack)] == [first]
    assert CascadeRecord.get(cascade_pk("acme", first)).scope_kind == "agent"


def test_every_sample_is_at_the_schema_version_the_handler_reads() -> None:
    for name in SAMPLES.values():
        assert json.loads((EVENTS / name).read_text())["detail"]["schemaVersion"] == SCHEMA_VERSION


def _rule_pattern(source: str) -> str:
    properties = load_template()["Resources"]["PlatformEventsFunction"]["Properties"]
    pattern = copy.deepcopy(properties["Events"]["PlatformDeletions"]["Properties"]["Pattern"])
    assert pattern["source"] == [{"Ref": "PlatformEventSource"}]
    pattern["source"] = [source]
    return json.dumps(pattern)


def test_the_rule_routes_each_sample_and_no_other_source_or_type(stack: Stack) -> None:
    """The template's rule, put on a bus in moto with a queue for a target, receives what PutEvents sends."""
    events, sqs = boto3.client("events"), boto3.client("sqs")
    source = load_template()["Parameters"]["PlatformEventSource"]["Default"]
    queue_url = sqs.create_queue(QueueName="platform-deletions")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="platform-deletions", EventPattern=_rule_pattern(source))
    events.put_targets(Rule="platform-deletions", Targets=[{"Id": "queue", "Arn": queue_arn}])
    sent = [sample(kind) for kind in SAMPLES]
    near_misses = [
        {**sample("project"), "source": "somebody.else"},
        {**sample("project"), "detail-type": "ProjectCreated"},
    ]

    for event in sent + near_misses:
        entry = {"Source": event["source"], "DetailType": event["detail-type"], "Detail": json.dumps(event["detail"])}
        assert events.put_events(Entries=[entry])["FailedEntryCount"] == 0

    received = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10)["Messages"]
    routed = sorted(
        (body["detail-type"], body["detail"]["eventId"]) for body in map(json.loads, (m["Body"] for m in received))
    )
    assert routed == sorted((event["detail-type"], event["detail"]["eventId"]) for event in sent)


def test_failed_events_and_undelivered_ones_both_reach_the_dead_letter_queue() -> None:
    resources = load_template()["Resources"]
    function = resources["PlatformEventsFunction"]["Properties"]
    queue_arn = {"Fn::GetAtt": "PlatformEventsDeadLetterQueue.Arn"}
    assert function["DeadLetterQueue"] == {"Type": "SQS", "TargetArn": queue_arn}
    assert function["EventInvokeConfig"]["MaximumRetryAttempts"] == 2
    assert function["Events"]["PlatformDeletions"]["Properties"]["DeadLetterConfig"] == {"Arn": queue_arn}
    [statement] = resources["PlatformEventsDeadLetterQueuePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    rule = statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::GetAtt"].split(".")[0]
    assert transform_template()["Resources"][rule]["Type"] == "AWS::Events::Rule"  # the rule SAM makes

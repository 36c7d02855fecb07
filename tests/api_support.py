"""Helpers for the HTTP API tests: raw DynamoDB views, seeded invocations, callers and format checks."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3
from boto3.dynamodb.types import TypeDeserializer
from moto import mock_aws
from moto.moto_api._internal.models import moto_api_backend
from sundial.deps import Deps
from sundial.domain import naming
from sundial.domain.instants import compact_instant
from sundial.store import invocations as invocation_store
from sundial.store.records import InvocationRecord, TriggerRecord, trigger_pk

from sundial_local.template import create_state_machine, create_tables
from tests.conftest import (
    ACCOUNT,
    BASE,
    MOTO_RECORDING_ONLY,
    REGION,
    RUNNER_FUNCTION_ARNS,
    START,
    ApiResponse,
    FakeClock,
    Stack,
    create_cascade_state_machine,
    make_settings,
)

PROJECT_BASE = "/tenants/acme/projects/website/scheduled-triggers"
DAILY = {"name": "Daily report", "cronExpression": "0 9 * * *"}
UTC_INSTANT = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
TIMESTAMP_KEYS = re.compile(r"(At|For)$")
TIMESTAMP_LISTS = frozenset({"upcomingRuns", "nextRuns"})

_deserializer = TypeDeserializer()


@dataclass
class WarmAws:
    """One moto session per test module whose clients and Deps are kept, with fresh tables per test.

    Building botocore clients dominates a fresh `stack` (each parses the service models again); the
    API tests make hundreds of requests against fresh tables, so they reset moto's state instead.
    """

    stack: Stack

    @classmethod
    @contextmanager
    def start(cls) -> Iterator[WarmAws]:
        with mock_aws(config=MOTO_RECORDING_ONLY):
            dynamodb = boto3.client("dynamodb", region_name=REGION)
            sfn = boto3.client("stepfunctions", region_name=REGION)
            clock = FakeClock()
            settings = make_settings(f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:sundial-runner")
            deps = Deps(settings, clock=clock, sfn_factory=lambda: sfn)
            yield cls(Stack(settings, deps, clock, sfn, dynamodb))

    def fresh_stack(self) -> Stack:
        """Empty tables from template.yaml, the runner state machine, and the clock back at START."""
        moto_api_backend.reset()
        settings = self.stack.settings
        create_tables(self.stack.dynamodb, settings.triggers_table, settings.invocations_table)
        arn = create_state_machine(self.stack.sfn, "sundial-runner", RUNNER_FUNCTION_ARNS)
        assert arn == settings.state_machine_arn
        create_cascade_state_machine(self.stack.sfn, settings)
        self.stack.clock.set(START)
        self.stack.extra.clear()
        return self.stack


def trigger_path(trigger_id: str, base: str = BASE) -> str:
    return f"{base}/{trigger_id}"


def raw_item(stack: Stack, table: str, key: dict[str, str]) -> dict[str, Any] | None:
    """An item exactly as stored, attribute names and all (None when absent)."""
    found = stack.dynamodb.get_item(
        TableName=table, Key={name: {"S": value} for name, value in key.items()}, ConsistentRead=True
    )
    item = found.get("Item")
    return None if item is None else {name: _deserializer.deserialize(value) for name, value in item.items()}


def raw_trigger(stack: Stack, trigger_id: str, tenant: str = "acme") -> dict[str, Any] | None:
    return raw_item(stack, stack.settings.triggers_table, {"pk": f"{tenant}#{trigger_id}"})


def scan(stack: Stack, table: str) -> list[dict[str, Any]]:
    """Every item of a table, in a stable order, for before/after comparisons."""
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": table, "ConsistentRead": True}
    while True:
        page = stack.dynamodb.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    return sorted(items, key=repr)


def due_index_entries(stack: Stack) -> dict[str, tuple[int, str]]:
    """pk → (shard, due_at) for every trigger in the sparse due index, read through the index itself."""
    entries: dict[str, tuple[int, str]] = {}
    for shard in range(stack.settings.due_shard_count):
        page = stack.dynamodb.query(
            TableName=stack.settings.triggers_table,
            IndexName="due",
            KeyConditionExpression="due_shard = :shard",
            ExpressionAttributeValues={":shard": {"N": str(shard)}},
        )
        for item in page["Items"]:
            entries[item["pk"]["S"]] = (shard, item["due_at"]["S"])
    return entries


def incarnation_of(trigger_id: str, tenant_id: str = "acme") -> str:
    """The stored trigger's incarnation, which scopes its invocation_store."""
    return str(TriggerRecord.get(trigger_pk(tenant_id, trigger_id), consistent_read=True).incarnation)


def seed_invocation(
    stack: Stack,
    trigger_id: str,
    scheduled_for: datetime,
    status: str = "completed",
    *,
    kind: str = "scheduled",
    attempts: list[dict[str, Any]] | None = None,
) -> InvocationRecord:
    """An invocation record as the runner leaves it, written with the same code the runner uses."""
    key = f"seed-{trigger_id}-{compact_instant(scheduled_for)}-{kind}"
    record = invocation_store.new_invocation(
        stack.deps,
        tenant_id="acme",
        project_id="website",
        agent_id="reporter",
        trigger_id=trigger_id,
        incarnation=incarnation_of(trigger_id),
        kind=kind,  # type: ignore[arg-type]
        invocation_id=naming.invocation_id_for(key, scheduled_for),
        idempotency_key=key,
        scheduled_for=scheduled_for,
        ref="main",
        execution_name=f"s-seed-{compact_instant(scheduled_for)}",
    )
    record.status = status
    if status not in invocation_store.UNFINISHED:
        record.completed_at = scheduled_for
    if attempts is not None:
        record.attempts = attempts
        record.attempt_number = len(attempts)
    if status in invocation_store.UNFINISHED:
        assert invocation_store.put_if_absent(stack.deps, record)
    else:
        record.save()
    return record


def registered_open(record: InvocationRecord) -> bool:
    """Whether the incarnation's register of unfinished runs still names the record."""
    open_runs = invocation_store.open_invocations(record.tenant_id, record.trigger_id, record.incarnation)
    return record.invocation_id in {run.invocation_id for run in open_runs}


def assert_error(response: ApiResponse, status: int, code: str) -> dict[str, Any]:
    """The standard error shape with this status and code; returns the error object."""
    assert response.status == status, response.body
    assert set(response.body) == {"error"}, response.body
    error: dict[str, Any] = response.body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert isinstance(error["details"], list), error
    for detail in error["details"]:
        assert set(detail) == {"field", "message"}, detail
    return error


def assert_utc_timestamps(value: Any) -> int:
    """Every timestamp in a response body is ISO-8601 UTC with Z; returns how many were checked."""
    checked = 0
    if isinstance(value, dict):
        for key, item in value.items():
            if item is not None and (TIMESTAMP_KEYS.search(key) and isinstance(item, str)):
                assert UTC_INSTANT.match(item), (key, item)
                checked += 1
            elif key in TIMESTAMP_LISTS:
                for instant in item:
                    assert UTC_INSTANT.match(instant), (key, instant)
                    checked += 1
            else:
                checked += assert_utc_timestamps(item)
    elif isinstance(value, list):
        checked += sum(assert_utc_timestamps(item) for item in value)
    return checked

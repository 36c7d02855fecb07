"""The common path's AWS bill (SPEC §5): per occurrence at most 2 DynamoDB writes and 1 StartExecution,
Query pages amortised. Calls are counted at botocore's `before-call` event on both clients."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sundial.domain.naming import scheduled_execution_name

from tests.conftest import START, FakeClock
from tests.dispatch_support import counting_calls, dispatch_env, dispatcher, seed_many, stored

DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")


DAILY = {"cron_expression": "0 15 * * *"}
# A thousand triggers due at START, 125 of each kind: every overlap policy, maxRuns, jitter and an
# interval, since none of them may add a call to the dispatcher's common path (issue: schedule features).
KINDS: list[dict[str, Any]] = [
    {**DAILY, "overlap_policy": "allow"},
    {**DAILY, "overlap_policy": "skip"},
    {**DAILY, "overlap_policy": "buffer_one"},
    {**DAILY, "overlap_policy": "cancel_other"},
    {**DAILY, "max_runs": 5},
    {**DAILY, "jitter_seconds": 30},
    {**DAILY, "start_at": "2026-11-20T15:00:00Z", "end_at": "2026-12-31T15:00:00Z"},
    {"interval_seconds": 3600, "start_at": "2026-11-26T12:00:00Z"},
]


@pytest.mark.slow
def test_a_thousand_due_occurrences_cost_two_writes_and_one_start_each(clock: FakeClock) -> None:
    clock.set(START - timedelta(minutes=10))
    with dispatch_env(clock) as env:
        trigger_ids = [trigger for fields in KINDS for trigger in seed_many(env, 1000 // len(KINDS), **fields)]
        env.clock.set(START - timedelta(seconds=100))

        with counting_calls(env) as calls:
            report = dispatcher(env).tick()

        assert report.counts["dispatched"] == 1000
        marker_writes = calls["PutItem"]  # the first tick records the shard count in use, once
        assert marker_writes <= 1
        writes = sum(calls[operation] for operation in DYNAMODB_WRITES)
        assert writes - marker_writes <= 2 * 1000
        assert calls["StartExecution"] == 1000
        assert calls["GetItem"] == 1, "one read of the shard marker a tick"
        shards = env.settings.due_shard_count
        assert calls["Query"] <= 2 * shards, "a page or two per shard, not a read per occurrence"
        assert set(calls) <= {"Query", "GetItem", "StartExecution", *DYNAMODB_WRITES}, f"unexpected calls: {calls}"
        names = {
            execution["name"]
            for page in env.sfn.get_paginator("list_executions").paginate(stateMachineArn=env.state_machine_arn)
            for execution in page["executions"]
        }
        assert names == {
            scheduled_execution_name("acme", trigger, stored(trigger).incarnation, 1, START) for trigger in trigger_ids
        }

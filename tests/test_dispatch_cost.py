"""The common path's AWS bill (SPEC §5): per occurrence at most 2 DynamoDB writes and 1 StartExecution,
Query pages amortised. Calls are counted at botocore's `before-call` event on both clients."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sundial.domain.naming import scheduled_execution_name

from tests.conftest import START, FakeClock
from tests.dispatch_support import counting_calls, dispatch_env, dispatcher, seed_many, stored

DYNAMODB_WRITES = ("PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems")


@pytest.mark.slow
def test_a_thousand_due_occurrences_cost_two_writes_and_one_start_each(clock: FakeClock) -> None:
    clock.set(START - timedelta(minutes=10))
    with dispatch_env(clock) as env:
        trigger_ids = seed_many(env, 1000, cron_expression="0 15 * * *")
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

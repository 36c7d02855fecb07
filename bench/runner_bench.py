"""What one run costs in billed units: state transitions, Lambda invocations and DynamoDB requests.

Runs the real statemachine/runner.asl.json in moto (handlers in-process, waits recorded, a local
HTTP agent) for three outcomes of a scheduled occurrence — first-try success, one retry, failure
with retries exhausted — and counts, per run, from the execution history and from the DynamoDB
requests the handlers make. An execution that ends FAILED, TIMED_OUT or ABORTED also invokes the
watcher (through EventBridge, which moto does not emulate): its event is delivered here and its
invocation and requests counted separately. docs/cost.md turns these counts into dollars.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast
from unittest import mock

import pytest
from moto import mock_aws
from moto.dynamodb.responses import DynamoHandler

RESULTS = Path(__file__).resolve().parent / "results" / "runner.json"
FIRST_RUN = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)
RUNS_PER_SCENARIO = 3
READS = ("get_item", "query")
WRITES = ("put_item", "update_item", "delete_item")
WATCHED_STATUSES = ("FAILED", "TIMED_OUT", "ABORTED")


@dataclass(frozen=True)
class Scenario:
    name: str
    max_retries: int
    replies: tuple[int, ...]


SCENARIOS = (
    Scenario("first_try_success", max_retries=1, replies=(200,)),
    Scenario("one_retry_then_success", max_retries=1, replies=(503, 200)),
    Scenario("failed_retries_exhausted", max_retries=1, replies=(503, 503)),
)


@dataclass
class Figures:
    """Per run (the mean over `RUNS_PER_SCENARIO` identical runs)."""

    scenario: str
    final_status: str
    state_transitions: float
    lambda_invocations: float
    agent_calls: float
    dynamodb_reads: dict[str, float]
    dynamodb_writes: dict[str, float]
    watcher_invocations: float
    watcher_dynamodb_reads: dict[str, float]
    watcher_dynamodb_writes: dict[str, float]
    invocation_item_bytes: int
    trigger_item_bytes: int


class DynamoRequests:
    """Counts the DynamoDB requests moto serves, by operation and table."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()

    @contextmanager
    def counting(self) -> Iterator[None]:
        patches = [self._wrap(operation) for operation in (*READS, *WRITES)]
        for patch in patches:
            patch.start()
        try:
            yield
        finally:
            for patch in patches:
                patch.stop()

    def _wrap(self, operation: str) -> Any:
        original = getattr(DynamoHandler, operation)
        counts = self.counts

        def counted(handler: DynamoHandler) -> Any:
            counts[(operation, str(handler.body["TableName"]))] += 1
            return original(handler)

        return mock.patch.object(DynamoHandler, operation, counted)

    def by_table(self, operations: tuple[str, ...], runs: int) -> dict[str, float]:
        totals: Counter[str] = Counter()
        for (operation, table), count in self.counts.items():
            if operation in operations:
                totals[f"{table}:{operation}"] += count
        return {key: value / runs for key, value in sorted(totals.items())}


def item_bytes(item: dict[str, Any]) -> int:
    """DynamoDB's item size: attribute names plus values (numbers approximated by their digits)."""

    def value_size(value: dict[str, Any]) -> int:
        (kind, data), *_ = value.items()
        if kind == "S":
            return len(str(data).encode())
        if kind == "N":
            return len(str(data).lstrip("-").replace(".", "")) // 2 + 1
        if kind in ("BOOL", "NULL"):
            return 1
        if kind == "L":
            return 3 + sum(1 + value_size(element) for element in data)
        if kind == "M":
            return 3 + sum(len(k.encode()) + 1 + value_size(v) for k, v in data.items())
        return len(json.dumps(data).encode())

    return sum(len(name.encode()) + value_size(value) for name, value in item.items())


def _environment() -> None:
    """Fake credentials (never a real account) and UTC, which moto's Wait-until-timestamp assumes."""
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "POWERTOOLS_TRACE_DISABLED": "1",
            "POWERTOOLS_METRICS_DISABLED": "1",
            "POWERTOOLS_LOG_LEVEL": "ERROR",
            "TZ": "UTC",
        }
    )
    time.tzset()
    # The failure scenario makes moto log the Fail state as an exception; the figures say it already.
    logging.getLogger("moto").setLevel(logging.CRITICAL)
    warnings.filterwarnings("ignore", message="No application metrics to publish")


def measure(scenario: Scenario) -> Figures:
    from aws_lambda_powertools.utilities.typing import LambdaContext
    from sundial.store.records import InvocationRecord, TriggerRecord, invocation_partition, trigger_pk

    from sundial_local.lambdas import LocalLambdaContext
    from tests.conftest import (
        BASE,
        MOTO_CONFIG,
        REGION,
        ApiClient,
        FakeClock,
        build_stack,
    )
    from tests.runner_support import (
        Reply,
        Run,
        lambda_invocations,
        runner_harness,
        state_transitions,
        status_change_event,
    )

    with mock_aws(config=MOTO_CONFIG), pytest.MonkeyPatch.context() as monkeypatch:
        import api_handler
        import runner_handler

        stack = build_stack(FakeClock())
        clock, dynamodb, settings = stack.clock, stack.dynamodb, stack.settings
        monkeypatch.setattr(api_handler, "deps", lambda: stack.deps)
        api = ApiClient()
        body = {
            "name": "Nightly report",
            "cronExpression": "0 * * * *",
            "maxRetries": scenario.max_retries,
            "payload": {"repo": "web", "days": 7},
            "messageTemplate": "Summarise {{repo}} for the last {{days}} days",
        }
        trigger_id = api.request("POST", BASE, body).body["id"]
        row = TriggerRecord.get(trigger_pk("acme", trigger_id))
        requests, watcher_requests = DynamoRequests(), DynamoRequests()
        watcher = cast(
            LambdaContext,
            LocalLambdaContext("sundial-runner-watcher", f"arn:aws:lambda:{REGION}:123456789012:function:watcher"),
        )
        runs: list[Run] = []
        totals: Counter[str] = Counter()
        with runner_harness(stack, monkeypatch) as harness:
            for number in range(RUNS_PER_SCENARIO):
                harness.agent.then(*(Reply(status) for status in scenario.replies))
                received_before = len(harness.agent.received)
                at = FIRST_RUN + timedelta(hours=number)
                clock.set(at)
                with requests.counting():
                    run = harness.finish(harness.start_occurrence(row, at))
                events = harness.events(run)
                totals["transitions"] += state_transitions(events)
                totals["lambdas"] += lambda_invocations(events)
                totals["agent"] += len(harness.agent.received) - received_before
                if run.status in WATCHED_STATUSES:
                    with watcher_requests.counting():
                        runner_handler.execution_ended_handler(status_change_event(run.described), watcher)
                    totals["watcher"] += 1
                runs.append(run)
        last = runs[-1]
        partition = invocation_partition("acme", trigger_id, row.incarnation)
        invocation_item = dynamodb.get_item(
            TableName=settings.invocations_table,
            Key={"trigger_key": {"S": partition}, "invocation_id": {"S": last.invocation_id}},
        )["Item"]
        trigger_item = dynamodb.get_item(
            TableName=settings.triggers_table, Key={"pk": {"S": trigger_pk("acme", trigger_id)}}
        )["Item"]
        status = InvocationRecord.get(partition, last.invocation_id).status
        return Figures(
            scenario=scenario.name,
            final_status=status,
            state_transitions=totals["transitions"] / RUNS_PER_SCENARIO,
            lambda_invocations=totals["lambdas"] / RUNS_PER_SCENARIO,
            agent_calls=totals["agent"] / RUNS_PER_SCENARIO,
            dynamodb_reads=requests.by_table(READS, RUNS_PER_SCENARIO),
            dynamodb_writes=requests.by_table(WRITES, RUNS_PER_SCENARIO),
            watcher_invocations=totals["watcher"] / RUNS_PER_SCENARIO,
            watcher_dynamodb_reads=watcher_requests.by_table(READS, RUNS_PER_SCENARIO),
            watcher_dynamodb_writes=watcher_requests.by_table(WRITES, RUNS_PER_SCENARIO),
            invocation_item_bytes=item_bytes(invocation_item),
            trigger_item_bytes=item_bytes(trigger_item),
        )


def main() -> None:
    _environment()
    figures = [measure(scenario) for scenario in SCENARIOS]
    header = (
        f"{'scenario':<26} {'status':<10} {'transitions':>11} {'lambdas':>8} {'agent':>6} {'reads':>6} {'writes':>7}"
    )
    print(header)
    for row in figures:
        print(
            f"{row.scenario:<26} {row.final_status:<10} {row.state_transitions:>11g} {row.lambda_invocations:>8g}"
            f" {row.agent_calls:>6g} {sum(row.dynamodb_reads.values()):>6g} {sum(row.dynamodb_writes.values()):>7g}"
        )
    for row in figures:
        print(f"  {row.scenario}: reads {row.dynamodb_reads}; writes {row.dynamodb_writes}")
        if row.watcher_invocations:
            print(
                f"    + watcher: {row.watcher_invocations:g} invocation(s);"
                f" reads {row.watcher_dynamodb_reads}; writes {row.watcher_dynamodb_writes}"
            )
    print(
        f"  item sizes: invocation {figures[-1].invocation_item_bytes} B (after 2 attempts),"
        f" trigger {figures[-1].trigger_item_bytes} B"
    )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps({"runs_per_scenario": RUNS_PER_SCENARIO, "scenarios": [asdict(f) for f in figures]}, indent=2) + "\n"
    )
    print(f"wrote {RESULTS.relative_to(RESULTS.parents[2])}")


if __name__ == "__main__":
    main()

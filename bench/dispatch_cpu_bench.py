"""Dispatcher CPU per occurrence on the real code path, and the start rate it allows a Lambda.

What runs: one real `Dispatcher.tick()` with the real `DynamoDispatchStore` (pynamodb) and the real
botocore Step Functions client; every request is serialised, signed and its answer parsed by the SDK
as in AWS. Only the network is replaced: `Endpoint._send` answers from canned responses, after the
modelled latency (DynamoDB 5 ms, StartExecution 20 ms), so the dispatcher's 32 threads wait and
contend as they would. The due index's items are real: N daily triggers created through the API's
service on moto tables built from template.yaml, read back and cut to the index's projection.

What it measures: the process's CPU time (all threads) for the tick, per occurrence dispatched.
What it derives: the starts per second one dispatcher can sustain on a share of a vCPU (Lambda gives
a function memory/1769 MB of a vCPU), against the StartExecution quota (300/s refill).

What it leaves out: conditional-write conflicts, throttling and retries (the pure model in
dispatch_bench.py has them), TLS and the HTTP connection pool's own CPU.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from bench.runner_bench import _environment
from sundial_local.template import resource

RESULTS = Path(__file__).resolve().parent / "results" / "dispatch_cpu.json"
SIZES = (2_000,)
DYNAMODB_LATENCY = 0.005
START_LATENCY = 0.020
START_REFILL_PER_SECOND = 300
SCHEDULED = datetime(2026, 11, 26, 15, 0, 0, tzinfo=UTC)
LAMBDA_MB_PER_VCPU = 1769
_DISPATCH = resource("DispatchFunction")["Properties"]
# The template's settings: the function's memory (Globals unless it sets its own) and concurrency.
DISPATCH_MEMORY_MB = int(_DISPATCH.get("MemorySize", 512))
DISPATCH_CONCURRENCY = int(_DISPATCH["Environment"]["Variables"]["DISPATCH_CONCURRENCY"])
SHARDS = 16  # the template's DueShardCount default


class _Body:
    """The raw HTTP body botocore reads an answer from."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self._data

    def read(self, *_: Any) -> bytes:
        return self._data


class CannedAws:
    """Answers DynamoDB and Step Functions requests at the HTTP layer, after the modelled latency."""

    def __init__(self, items_by_shard: dict[int, list[dict[str, Any]]]) -> None:
        self.items_by_shard = items_by_shard
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()

    def answer(self, request: Any) -> Any:
        from botocore.awsrequest import AWSResponse, HTTPHeaders

        target = request.headers.get("X-Amz-Target", "")
        operation = (target.decode() if isinstance(target, bytes) else str(target)).rpartition(".")[2]
        body = json.loads(request.body or b"{}")
        with self._lock:
            self.calls[operation] += 1
        time.sleep(START_LATENCY if operation == "StartExecution" else DYNAMODB_LATENCY)
        if operation == "Query":
            payload: dict[str, Any] = self._query(body)
        elif operation == "StartExecution":
            payload = {
                "executionArn": f"arn:aws:states:us-east-1:123456789012:execution:r:{body['name']}",
                "startDate": SCHEDULED.timestamp(),
            }
        else:  # GetItem (no shard marker yet), PutItem, UpdateItem (no return values)
            payload = {}
        data = json.dumps(payload).encode()
        headers = HTTPHeaders()
        headers["Content-Type"] = "application/x-amz-json-1.0"
        headers["x-amzn-RequestId"] = "canned"
        return AWSResponse(request.url, 200, headers, _Body(data))

    def _query(self, body: dict[str, Any]) -> dict[str, Any]:
        shard = int(next(value["N"] for value in body["ExpressionAttributeValues"].values() if "N" in value))
        items = self.items_by_shard.get(shard, [])
        start = 0
        if "ExclusiveStartKey" in body:
            pk = body["ExclusiveStartKey"]["pk"]["S"]
            start = next(index for index, item in enumerate(items) if item["pk"]["S"] == pk) + 1
        page = items[start : start + int(body.get("Limit", 1000))]
        answer: dict[str, Any] = {"Items": page, "Count": len(page), "ScannedCount": len(page)}
        if start + len(page) < len(items):
            last = page[-1]
            answer["LastEvaluatedKey"] = {name: last[name] for name in ("pk", "due_shard", "due_at")}
        return answer


def due_items(count: int) -> tuple[dict[int, list[dict[str, Any]]], Any]:
    """`count` daily triggers created through the service on moto, as the due index holds them."""
    from sundial.store.records import DUE_INDEX_ATTRIBUTES

    from tests.conftest import FakeClock
    from tests.dispatch_support import dispatch_env, seed_many

    clock = FakeClock(SCHEDULED - timedelta(minutes=10))
    with dispatch_env(clock, DISPATCH_CONCURRENCY=DISPATCH_CONCURRENCY, DUE_SHARD_COUNT=SHARDS) as env:
        seed_many(env, count, cron_expression="0 15 * * *")
        keep = {"pk", "due_shard", "due_at", *DUE_INDEX_ATTRIBUTES}
        by_shard: dict[int, list[dict[str, Any]]] = {}
        pages = env.dynamodb.get_paginator("scan").paginate(TableName=env.settings.triggers_table)
        for raw in (item for page in pages for item in page["Items"] if "due_shard" in item):
            item = {name: value for name, value in raw.items() if name in keep}
            by_shard.setdefault(int(item["due_shard"]["N"]), []).append(item)
        settings = env.settings
    for items in by_shard.values():
        items.sort(key=lambda item: (item["due_at"]["S"], item["pk"]["S"]))
    return by_shard, settings


@contextmanager
def canned(aws: CannedAws) -> Iterator[None]:
    from botocore.endpoint import Endpoint

    with mock.patch.object(Endpoint, "_send", lambda _endpoint, request: aws.answer(request)):
        yield


def measure(count: int) -> dict[str, Any]:
    import boto3
    from botocore.config import Config
    from sundial.deps import Deps
    from sundial.services.dispatcher import Dispatcher

    by_shard, settings = due_items(count)
    aws = CannedAws(by_shard)
    clock = lambda: SCHEDULED - timedelta(seconds=100)  # noqa: E731 - a fixed instant: all due, none late
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"}, max_pool_connections=64)
    with canned(aws):
        sfn = boto3.client("stepfunctions", region_name="us-east-1", config=config)
        deps = Deps(settings, clock=clock, sfn_factory=lambda: sfn)
        dispatcher = Dispatcher(deps)
        cpu, wall = time.process_time(), time.perf_counter()
        report = dispatcher.tick()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    dispatched = report.counts["dispatched"]
    assert dispatched == count, report.counts
    cpu_ms = cpu * 1000 / dispatched
    vcpu = DISPATCH_MEMORY_MB / LAMBDA_MB_PER_VCPU
    cpu_bound = vcpu / (cpu_ms / 1000)
    return {
        "occurrences": count,
        "dispatched": dispatched,
        "concurrency": settings.dispatch_concurrency,
        "cpu_ms_per_occurrence": round(cpu_ms, 3),
        "wall_seconds": round(wall, 2),
        "starts_per_second_on_one_full_vcpu": round(1000 / cpu_ms, 1),
        "dispatch_memory_mb": DISPATCH_MEMORY_MB,
        "vcpu_share": round(vcpu, 3),
        "starts_per_second_cpu_bound_at_memory": round(cpu_bound, 1),
        "start_execution_quota_per_second": START_REFILL_PER_SECOND,
        "cpu_bound_vs_quota": round(cpu_bound / START_REFILL_PER_SECOND, 3),
        "calls": dict(aws.calls),
    }


def main() -> None:
    _environment()
    results = [measure(count) for count in SIZES]
    for row in results:
        print(json.dumps(row), flush=True)
    model = " ".join((__doc__ or "").split())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": model, "runs": results}, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(RESULTS.parents[2])}")


if __name__ == "__main__":
    main()

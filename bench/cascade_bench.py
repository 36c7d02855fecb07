"""A cascade of 100,000 triggers: how long it takes, what it calls, what it costs.

What runs is the real thing: the Page Task's handler (`cascade_handler.page_handler`, the real
store and botocore clients) against moto's DynamoDB and Step Functions, with the tables built from
template.yaml and the template's page size (CASCADE_PAGE_SIZE). One project holds N triggers (cloned
straight into moto's table: seeding is not measured) of which RUNS have a pending run-now, so pages
also cancel invocations and stop executions; a trigger of another project must survive.

What is modelled, because moto is not AWS:

* **Time inside Lambda.** Each AWS call is charged a latency (LATENCY_MS: DynamoDB in-region
  single-item calls ~5 ms, Query/BatchGetItem ~8 ms, Step Functions StopExecution ~30 ms) on a
  virtual clock, and the handler's `time_left` is the function's timeout (template, 300 s) less the
  virtual time of that invocation: so a Page invocation stops where it would in AWS, a minute early
  (PAGE_TIME_MARGIN_SECONDS), and the state machine calls it again. The handler's own CPU is left
  out (it is small next to the calls; bench/dispatch_cpu_bench.py measures that for dispatch).
* **The state machine**, from statemachine/cascade.asl.json's shape: each Page invocation is two
  state transitions (Page, Done?), each settle pause one more (Settle) and the end one (Completed);
  the settle pause (60 s) is added to the cascade's duration, not slept.

Figures: the cascade's modelled duration in AWS, Page invocations (and the least time any of
them had left when it returned: above 0, no invocation hit the timeout), state transitions, AWS calls by
operation and per trigger, the counts the cascade reported, and the seconds this machine took
(moto is far slower than DynamoDB). Written to bench/results/cascade.json.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from moto import mock_aws

from bench.runner_bench import _environment

RESULTS = Path(__file__).resolve().parent / "results" / "cascade.json"
SIZES = (10_000, 100_000)
RUNS = 100  # triggers of the scope with a pending run (an open invocation and a running execution)
LATENCY_MS = {
    "GetItem": 5.0,
    "PutItem": 6.0,
    "UpdateItem": 6.0,
    "DeleteItem": 6.0,
    "Query": 8.0,
    "BatchGetItem": 8.0,
    "StopExecution": 30.0,
    "PutEvents": 15.0,
}
DEFAULT_LATENCY_MS = 10.0


class VirtualClock:
    """AWS-side seconds spent, advanced by every call."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls: Counter[str] = Counter()


@contextmanager
def counted_aws_calls(clock: VirtualClock) -> Iterator[None]:
    from botocore.client import BaseClient

    original = vars(BaseClient)["_make_api_call"]  # private in the stubs

    def counted(self: BaseClient, operation: str, params: Any) -> Any:
        clock.calls[operation] += 1
        clock.seconds += LATENCY_MS.get(operation, DEFAULT_LATENCY_MS) / 1000
        return original(self, operation, params)

    with mock.patch.object(BaseClient, "_make_api_call", counted):
        yield


def _seed(stack: Any, api: Any, count: int) -> None:
    """`count` triggers in project website (RUNS of them with a pending run-now), one in project shop."""
    from moto.dynamodb.models import dynamodb_backends
    from sundial.store.records import TriggerRecord, trigger_pk

    from sundial_local.config import ACCOUNT, REGION
    from tests.cascade_support import ADMIN
    from tests.conftest import BASE

    for number in range(RUNS):
        body = {"id": f"run-{number:03d}", "name": "Run", "cronExpression": "0 9 * * *"}
        assert api.request("POST", BASE, body, claims=ADMIN).status == 201
        assert api.request("POST", f"{BASE}/run-{number:03d}/run", claims=ADMIN).status == 202
    other = BASE.replace("/website/", "/shop/")
    assert api.request("POST", other, {"id": "elsewhere", "name": "Stays", "cronExpression": "0 9 * * *"}).status == 201
    table = dynamodb_backends[ACCOUNT][REGION].get_table(stack.settings.triggers_table)
    template = TriggerRecord.get(trigger_pk("acme", "run-000"), consistent_read=True).serialize()
    for name in ("due_shard", "due_at"):
        template.pop(name, None)
    for index in range(count - RUNS):
        trigger_id = f"bulk-{index:06d}"
        table.put_item(
            {
                **template,
                "pk": {"S": trigger_pk("acme", trigger_id)},
                "trigger_id": {"S": trigger_id},
                "agent_trigger": {"S": f"reporter#{trigger_id}"},
            }
        )


def measure(count: int) -> dict[str, Any]:
    from sundial.domain.cascade import CascadeScope
    from sundial.domain.errors import NotFoundError
    from sundial.services import cascades
    from sundial.store import cascades as cascade_store

    from sundial_local.template import resource
    from tests.conftest import MOTO_RECORDING_ONLY, ApiClient, FakeClock, build_stack, lambda_context

    timeout = float(resource("CascadeFunction")["Properties"]["Timeout"])
    page_size = int(resource("CascadeFunction")["Properties"]["Environment"]["Variables"]["CASCADE_PAGE_SIZE"])
    with mock_aws(config=MOTO_RECORDING_ONLY), pytest.MonkeyPatch.context() as monkeypatch:
        import api_handler
        import cascade_handler

        stack = build_stack(FakeClock())
        monkeypatch.setattr(
            stack.deps, "settings", stack.deps.settings.model_copy(update={"cascade_page_size": page_size})
        )
        monkeypatch.setattr(api_handler, "deps", lambda: stack.deps)
        monkeypatch.setattr(cascade_handler, "deps", lambda: stack.deps)
        _seed(stack, ApiClient(), count)
        accepted = cascades.accept(stack.deps, CascadeScope.project("acme", "website"), "csc_bench", "api")

        clock = VirtualClock()
        invocations = settles = 0
        least_time_left = timeout
        started = time.perf_counter()
        with counted_aws_calls(clock):
            step: dict[str, Any] = {"tenantId": "acme", "cascadeId": accepted.cascade_id}
            while not step.get("done"):
                invocation_began = clock.seconds

                def time_left(began: float = invocation_began) -> float:
                    return timeout - (clock.seconds - began)

                context = lambda_context("sundial-cascade")
                monkeypatch.setattr(context, "get_remaining_time_in_millis", lambda: int(time_left() * 1000))
                step = cascade_handler.page_handler(step, context)
                least_time_left = min(least_time_left, time_left())
                invocations += 1
                if step["waitSeconds"]:
                    settles += 1
                    clock.seconds += step["waitSeconds"]
                    stack.clock.advance(step["waitSeconds"])
        elapsed = time.perf_counter() - started
        done = cascade_store.find("acme", accepted.cascade_id)
        if done is None:
            raise NotFoundError("the cascade record is gone")
        survivors = stack.dynamodb.get_item(
            TableName=stack.settings.triggers_table, Key={"pk": {"S": "acme#elsewhere"}}
        )
    calls = dict(sorted(clock.calls.items()))
    total_calls = sum(calls.values())
    return {
        "triggers": count,
        "with_open_runs": RUNS,
        "page_size": page_size,
        "state": done.state,
        "found": int(done.found),
        "deleted": int(done.deleted),
        "invocations_cancelled": int(done.invocations_cancelled),
        "executions_stopped": int(done.executions_stopped),
        "other_project_survives": "Item" in survivors,
        "modelled_seconds_in_aws": round(clock.seconds, 1),
        "page_invocations": invocations,
        "function_timeout_seconds": timeout,
        "least_time_left_seconds": round(least_time_left, 1),
        "settle_pauses": settles,
        "state_transitions": 2 * invocations + settles + 1,
        "aws_calls": calls,
        "aws_calls_total": total_calls,
        "aws_calls_per_trigger": round(total_calls / count, 3),
        "seconds_here": round(elapsed, 1),
    }


def main(sizes: tuple[int, ...] = SIZES) -> None:
    _environment()
    rows = []
    for count in sizes:
        row = measure(count)
        print(json.dumps(row), flush=True)
        rows.append(row)
    model = " ".join((__doc__ or "").split())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": model, "latency_ms": LATENCY_MS, "rows": rows}, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(RESULTS.parents[2])}")


if __name__ == "__main__":
    main(tuple(int(size) for size in sys.argv[1:]) or SIZES)

"""Dispatcher throughput against a model of AWS latency and quotas (`make bench`).

The real `Dispatcher` runs unchanged (planning, the claim protocol, its thread pool, bounded
submission and backoff); only its two AWS collaborators are models behind the interfaces it calls:

* DynamoDB: the triggers' due index and items in memory behind the `DispatchStore` port, with the
  same conditional-write semantics as `DynamoDispatchStore` and ~5 ms per call;
* Step Functions: `start_execution` with ~20 ms per call, unique execution names, and a token
  bucket of 1,300 burst and 300/s refill (StartExecution in us-east-1), answering
  ThrottlingException when empty.

Time is a real clock sped up `time_scale` times (model seconds = real seconds x scale; 1 for
1,000 and 10,000, 4 for 100,000): every modelled latency and every backoff sleep is divided by
the scale, so the dispatcher's threads really wait and
really contend. The idle gap between one tick's end and the next minute's tick is skipped. At 4x the
dispatcher's own CPU time counts four times over, which makes those figures slightly pessimistic.

Scenario: N daily triggers all due at 15:00:00; ticks every minute from 14:58:00 (the lookahead
lets the first two ticks claim ahead), each a Lambda with the template's timeout whose remaining
time the dispatcher watches; ticks continue until the index holds nothing due.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, cast

from botocore.exceptions import ClientError
from sundial.adapters.aws_retry import Backoff
from sundial.deps import Deps
from sundial.domain.instants import format_instant
from sundial.services.dispatcher import START_BACKOFF, Dispatcher, TickReport
from sundial.settings import Settings
from sundial.store.dispatch import Advance, Claim, DueRow, PageKey, ShardMarker
from sundial.store.records import due_shard_for

from sundial_local.template import resource

RESULTS = Path(__file__).resolve().parent / "results" / "dispatch.json"
# Model seconds per real second, per size: real time where it is quick enough, 4x for 100,000.
SCALES = {1_000: 1.0, 10_000: 1.0, 100_000: 4.0}
SCALE_OVERRIDE = os.environ.get("DISPATCH_BENCH_SCALE")
DYNAMODB_LATENCY = 0.005
START_LATENCY = 0.020
START_BURST = 1_300
START_REFILL_PER_SECOND = 300
LAMBDA_TIMEOUT = float(resource("DispatchFunction")["Properties"]["Timeout"])
SCHEDULED = datetime(2026, 11, 26, 15, 0, 0, tzinfo=UTC)
# Ticks from the longest lookahead before the herd: the adaptive lookahead starts claiming it then.
FIRST_TICK = SCHEDULED - timedelta(minutes=10)
STATE_MACHINE_ARN = "arn:aws:states:us-east-1:123456789012:stateMachine:sundial-runner"
PAGE_SIZE = 1000


class ModelClock:
    """Model time from a real clock sped up `scale` times; idle stretches can be skipped outright."""

    def __init__(self, start: datetime, scale: float) -> None:
        self.start, self.scale = start, scale
        self._origin = time.perf_counter()
        self._skipped = 0.0

    def seconds(self) -> float:
        """Model seconds since `start`."""
        return (time.perf_counter() - self._origin) * self.scale + self._skipped

    def __call__(self) -> datetime:
        return self.start + timedelta(seconds=self.seconds())

    def sleep(self, model_seconds: float) -> None:
        time.sleep(model_seconds / self.scale)

    def skip_to(self, model_seconds: float) -> None:
        """Jump ahead while nothing runs (between ticks)."""
        self._skipped += max(0.0, model_seconds - self.seconds())


class TokenBucket:
    def __init__(self, clock: ModelClock, capacity: float, refill_per_second: float) -> None:
        self.clock, self.capacity, self.refill = clock, capacity, refill_per_second
        self.tokens, self.updated = capacity, clock.seconds()
        self._lock = threading.Lock()

    def take(self) -> bool:
        with self._lock:
            now = self.clock.seconds()
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.refill)
            self.updated = now
            if self.tokens < 1:
                return False
            self.tokens -= 1
            return True


def _client_error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


class ExecutionExistsError(ClientError):
    """What botocore raises as `client.exceptions.ExecutionAlreadyExists`."""


class StepFunctionsExceptions:
    ExecutionAlreadyExists = ExecutionExistsError


@dataclass
class ModelStepFunctions:
    """StartExecution with latency, the regional token bucket and unique names (nothing runs)."""

    clock: ModelClock
    bucket: TokenBucket
    exceptions: type[StepFunctionsExceptions] = StepFunctionsExceptions
    executions: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start_execution(self, *, stateMachineArn: str, name: str, input: str) -> dict[str, Any]:  # noqa: N803
        self.clock.sleep(START_LATENCY)
        with self._lock:
            self.calls["StartExecution"] += 1
            if not self.bucket.take():
                self.calls["StartExecution throttled"] += 1
                raise _client_error("ThrottlingException", "StartExecution")
            existing = self.executions.get(name)
            if existing is not None:
                if existing["input"] == input:  # still running: Step Functions returns the same execution
                    return {"executionArn": existing["arn"]}
                raise ExecutionExistsError(
                    {"Error": {"Code": "ExecutionAlreadyExists", "Message": name}}, "StartExecution"
                )
            arn = f"{stateMachineArn.replace(':stateMachine:', ':execution:')}:{name}"
            self.executions[name] = {"arn": arn, "input": input, "started": self.clock.seconds()}
            return {"executionArn": arn}


@dataclass
class Item:
    """The trigger attributes the dispatcher reads and writes."""

    row: DueRow
    shard: int | None
    missed_runs_skipped: int = 0
    enabled: bool = True


@dataclass
class ModelStore:
    """The due index and trigger items in memory, with DynamoDispatchStore's conditions and ~5 ms per call."""

    clock: ModelClock
    items: dict[str, Item] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    marker: ShardMarker | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def due_page(self, shard: int, until: str, cursor: PageKey | None) -> tuple[list[DueRow], PageKey | None]:
        self.clock.sleep(DYNAMODB_LATENCY)
        after = (cursor["due_at"], cursor["pk"]) if cursor else ("", "")
        with self._lock:
            self.calls["Query"] += 1
            keys = sorted(
                (item.row.due_at, pk)
                for pk, item in self.items.items()
                if item.shard == shard
                and item.row.due_at is not None
                and after < (item.row.due_at, pk)
                and item.row.due_at <= until
            )
            page = [self.items[pk].row for _, pk in keys[:PAGE_SIZE]]
        if len(keys) <= PAGE_SIZE:
            return page, None
        last = page[-1]
        return page, {"due_at": last.due_at, "pk": last.pk}

    def _write(self, pk: str, check: Any, apply: Any) -> bool:
        self.clock.sleep(DYNAMODB_LATENCY)
        with self._lock:
            self.calls["UpdateItem"] += 1
            item = self.items.get(pk)
            if item is None or not check(item):
                self.calls["UpdateItem conflict"] += 1
                return False
            apply(item)
            return True

    def advance(self, row: DueRow, step: Advance) -> bool:
        def check(item: Item) -> bool:
            current = item.row
            return (
                current.incarnation == row.incarnation
                and current.next_run_at == row.next_run_at
                and current.schedule_version == row.schedule_version
                and current.claim is None
            )

        def apply(item: Item) -> None:
            due_at = step.lease_until if step.claim is not None else step.next_run_at
            item.row = replace(
                item.row,
                next_run_at=step.next_run_at,
                claim=step.claim,
                due_at=format_instant(due_at) if due_at is not None else None,
            )
            item.missed_runs_skipped += step.skipped
            item.shard = None if due_at is None else step.shard
            if step.finished is not None:
                item.enabled = False
                item.row = replace(item.row, schedule_version=item.row.schedule_version + 1)

        return self._write(row.pk, check, apply)

    def renew_lease(self, row: DueRow, lease_until: datetime) -> bool:
        claim = row.claim
        assert claim is not None

        def check(item: Item) -> bool:
            current = item.row
            return (
                current.incarnation == row.incarnation
                and current.claim is not None
                and current.claim.name == claim.name
                and current.due_at == row.due_at
            )

        def apply(item: Item) -> None:
            item.row = replace(item.row, due_at=format_instant(lease_until))

        return self._write(row.pk, check, apply)

    def release(self, row: DueRow, claim: Claim, next_run_at: datetime | None, shard: int) -> bool:
        def check(item: Item) -> bool:
            current = item.row
            return (
                current.incarnation == row.incarnation
                and current.claim is not None
                and current.claim.name == claim.name
            )

        def apply(item: Item) -> None:
            due_at = format_instant(next_run_at) if next_run_at is not None else None
            item.row = replace(item.row, claim=None, due_at=due_at)
            item.shard = None if due_at is None else shard

        return self._write(row.pk, check, apply)

    def shard_marker(self) -> ShardMarker | None:
        self.clock.sleep(DYNAMODB_LATENCY)
        with self._lock:
            self.calls["GetItem"] += 1
            return self.marker

    def raise_marker(self, shard_count: int) -> None:
        self.clock.sleep(DYNAMODB_LATENCY)
        with self._lock:
            self.calls["PutItem"] += 1
            if self.marker is None or self.marker.shard_count < shard_count:
                self.marker = ShardMarker(shard_count)

    def _replace_marker(self, observed: int, marker: ShardMarker) -> bool:
        self.clock.sleep(DYNAMODB_LATENCY)
        with self._lock:
            self.calls["PutItem"] += 1
            if self.marker is None or self.marker.shard_count != observed:
                return False
            self.marker = marker
            return True

    def lower_marker(self, observed: int, shard_count: int) -> bool:
        return self._replace_marker(observed, ShardMarker(shard_count))

    def note_empty(self, observed: int, since: datetime | None) -> bool:
        return self._replace_marker(observed, ShardMarker(observed, since))

    def shard_page(self, shard: int, cursor: PageKey | None) -> tuple[list[DueRow], PageKey | None]:
        """Every row of a shard in one page (the bench never re-shards more than a page holds)."""
        assert cursor is None
        self.clock.sleep(DYNAMODB_LATENCY)
        with self._lock:
            self.calls["Query"] += 1
            rows = [replace(item.row, due_shard=item.shard) for item in self.items.values() if item.shard == shard]
        return rows, None

    def move_shard(self, row: DueRow, shard: int) -> bool:
        def check(item: Item) -> bool:
            return item.row.incarnation == row.incarnation and item.shard == row.due_shard

        def apply(item: Item) -> None:
            item.shard = shard

        return self._write(row.pk, check, apply)


def seed(store: ModelStore, count: int, shard_count: int) -> None:
    for index in range(count):
        trigger_id = f"trg_{index:06d}"
        store.items[f"acme#{trigger_id}"] = Item(
            DueRow(
                pk=f"acme#{trigger_id}",
                tenant_id="acme",
                project_id="website",
                agent_id=f"agent-{index % 50}",
                trigger_id=trigger_id,
                incarnation=f"{index:08x}",
                cron_expression="0 15 * * *",
                cron_timezone="UTC",
                run_at=None,
                catch_up_window_seconds=3600,
                schedule_version=1,
                next_run_at=SCHEDULED,
                due_at=format_instant(SCHEDULED),
                claim=None,
            ),
            shard=due_shard_for("acme", trigger_id, shard_count),
        )


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def remaining(clock: ModelClock, started: float) -> float:
    """The tick's Lambda time left, in model seconds."""
    return LAMBDA_TIMEOUT - (clock.seconds() - started)


def template_settings() -> Settings:
    """The dispatcher's settings as template.yaml deploys them (its own and the global variables that
    are plain values; those set from parameters keep their defaults, which are the parameters')."""
    from sundial_local.template import load_template

    plain = {
        name: value
        for variables in (
            load_template()["Globals"]["Function"]["Environment"]["Variables"],
            resource("DispatchFunction")["Properties"]["Environment"]["Variables"],
        )
        for name, value in variables.items()
        if isinstance(value, str)
    }
    return Settings.model_validate({**plain, "STATE_MACHINE_ARN": STATE_MACHINE_ARN})


def settings_text(settings: Settings) -> str:
    return (
        f"template.yaml's: {settings.due_shard_count} shards, concurrency {settings.dispatch_concurrency}, "
        f"lookahead {settings.lookahead_seconds} s (claiming ahead up to {settings.longest_lookahead_seconds} s "
        f"at {settings.start_rate_per_second:g} starts/s), time margin {settings.dispatch_time_margin_seconds:g} s, "
        f"lease {settings.claim_lease_seconds} s"
    )


def run(count: int, scale: float) -> dict[str, Any]:
    settings = template_settings()
    clock = ModelClock(FIRST_TICK, scale)
    store = ModelStore(clock)
    seed(store, count, settings.due_shard_count)
    sfn = ModelStepFunctions(clock, TokenBucket(clock, START_BURST, START_REFILL_PER_SECOND))
    deps = Deps(settings, clock=clock, sfn_factory=lambda: cast(Any, sfn))
    dispatcher = Dispatcher(
        deps,
        store=store,
        backoff=Backoff(sleep=clock.sleep, monotonic=clock.seconds),
        start_backoff=replace(START_BACKOFF, sleep=clock.sleep, monotonic=clock.seconds),
    )

    reports: list[TickReport] = []
    tick_starts: list[float] = []
    wall_started = time.perf_counter()
    minute = 0
    while True:
        clock.skip_to(minute * 60.0)
        started = clock.seconds()
        tick_starts.append(started)
        report = dispatcher.tick(remaining_seconds=partial(remaining, clock, started))
        reports.append(report)
        minute += 1
        if (len(sfn.executions) >= count and report.counts["due"] + report.counts["in_flight"] == 0) or minute > 60:
            break
    wall_seconds = time.perf_counter() - wall_started

    per_occurrence = Counter[tuple[str, str]]()
    start_times: list[float] = []
    for execution in sfn.executions.values():
        payload = json.loads(execution["input"])
        per_occurrence[(payload["triggerId"], payload["scheduledFor"])] += 1
        start_times.append(execution["started"])
    duplicates = sum(n - 1 for n in per_occurrence.values() if n > 1)
    expected = {(item.row.trigger_id, format_instant(SCHEDULED)) for item in store.items.values()}
    losses = len(expected - set(per_occurrence)) + sum(1 for item in store.items.values() if item.row.claim)

    totals: Counter[str] = Counter()
    for report in reports:
        totals.update(report.counts)
    lags = [lag for report in reports for lag in report.lags_seconds]
    worked = [report for report in reports if report.counts["due"]]
    first_work = tick_starts[next(index for index, report in enumerate(reports) if report.counts["due"])]
    span = max(start_times) - first_work
    quota_bound = max(0.0, (count - START_BURST) / START_REFILL_PER_SECOND)
    path_latency = 2 * DYNAMODB_LATENCY + START_LATENCY
    concurrency_bound = count * path_latency / settings.dispatch_concurrency
    bound = max(quota_bound, concurrency_bound)
    quota_binds = quota_bound >= concurrency_bound
    dynamodb_calls = store.calls["Query"] + store.calls["UpdateItem"]
    return {
        "occurrences": count,
        "time_scale": scale,
        "wall_seconds": round(wall_seconds, 2),
        "model_seconds_to_last_start": round(span, 2),
        "ticks_with_work": len(worked),
        "ticks_stopped_early": sum(report.stopped_early for report in reports),
        "achieved_starts_per_second": round(len(start_times) / span, 1),
        "quota_bound_seconds": round(quota_bound, 2),
        "concurrency_bound_seconds": round(concurrency_bound, 2),
        "rate_vs_bound": round(bound / span, 3),
        "binding_limit": "StartExecution quota" if quota_binds else "dispatcher concurrency",
        "quota_goal_met": bound / span >= 0.85 if quota_binds else None,
        "calls_per_occurrence": {
            "dynamodb": round(dynamodb_calls / count, 3),
            "dynamodb_writes": round(store.calls["UpdateItem"] / count, 3),
            "dynamodb_queries": round(store.calls["Query"] / count, 4),
            "start_execution": round(sfn.calls["StartExecution"] / count, 3),
            "start_execution_throttled": round(sfn.calls["StartExecution throttled"] / count, 3),
        },
        "dispatched": totals["dispatched"],
        "duplicates": duplicates,
        "losses": losses,
        "errors": totals["errors"],
        "claim_conflicts": totals["claim_conflicts"],
        "redriven": totals["redriven"],
        "dispatch_lag_seconds": {
            "p50": round(percentile(lags, 0.5), 1),
            "p95": round(percentile(lags, 0.95), 1),
            "max": round(max(lags), 1),
            "started_ahead_of_schedule": round(sum(lag <= 0 for lag in lags) / len(lags), 3),
        },
        # Only ticks that had work: the last tick, which finds the index empty, is not a tick's cost.
        "mean_tick_seconds": round(statistics.fmean(report.duration_seconds for report in worked) * scale, 1),
    }


DOC = Path(__file__).resolve().parents[1] / "docs" / "dispatch.md"
TABLE_BEGIN = "<!-- table from bench/results/dispatch.json (make bench rewrites it) -->"
TABLE_END = "<!-- end of table -->"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value < 100 else f"{value:.0f} s"


def doc_table(results: dict[str, Any]) -> str:
    """docs/dispatch.md's throughput table, from the figures in bench/results/dispatch.json."""
    lines = [
        "| due at 15:00 | time to the last start | starts/s | vs. bound | calls per occurrence"
        " (DynamoDB / of which writes / StartExecution incl. throttled) | duplicates / losses"
        " | started ahead of 15:00 |",
        "|---:|---:|---:|---:|---|---|---:|",
    ]
    for run in results["runs"]:
        ticks = f" ({run['ticks_with_work']} ticks)" if run["ticks_with_work"] > 1 else ""
        if run["binding_limit"] == "StartExecution quota":
            versus = f"{run['rate_vs_bound']:.2f} of the quota bound ({_seconds(run['quota_bound_seconds'])})"
        else:
            versus = f"{run['rate_vs_bound']:.2f} of the concurrency bound (the quota does not bind)"
        calls = run["calls_per_occurrence"]
        lag = run["dispatch_lag_seconds"]
        ahead = f"{lag['started_ahead_of_schedule']:.0%}".replace("%", " %")
        if lag["started_ahead_of_schedule"] < 1:
            ahead += f" (p50 lag {lag['p50']:+.0f} s, max {lag['max']:+.0f} s)"
        lines.append(
            f"| {run['occurrences']:,} | {_seconds(run['model_seconds_to_last_start'])}{ticks}"
            f" | {run['achieved_starts_per_second']:.0f} | {versus}"
            f" | {calls['dynamodb']:.2f} / {calls['dynamodb_writes']:.2f} / {calls['start_execution']:.2f}"
            f" | {run['duplicates']} / {run['losses']} | {ahead} |"
        )
    return "\n".join(lines)


def doc_with_table(doc: str, results: dict[str, Any]) -> str:
    """`doc` with the text between the table's markers replaced by `doc_table(results)`."""
    head, rest = doc.split(TABLE_BEGIN + "\n", 1)
    _, tail = rest.split(TABLE_END, 1)
    return f"{head}{TABLE_BEGIN}\n{doc_table(results)}\n{TABLE_END}{tail}"


def main() -> None:
    sizes = [int(arg) for arg in sys.argv[1:] if arg.isdigit()] or list(SCALES)
    results: dict[str, Any] = {
        "model": {
            "clock": "real clock sped up time_scale times (latencies and backoff sleeps scaled; idle gaps skipped)",
            "dynamodb_latency_seconds": DYNAMODB_LATENCY,
            "start_execution_latency_seconds": START_LATENCY,
            "start_execution_bucket": {"burst": START_BURST, "refill_per_second": START_REFILL_PER_SECOND},
            "lambda_timeout_seconds": LAMBDA_TIMEOUT,
            "settings": settings_text(template_settings()),
        },
        "runs": [],
    }
    for count in sizes:
        outcome = run(count, float(SCALE_OVERRIDE or SCALES.get(count, 4.0)))
        results["runs"].append(outcome)
        print(json.dumps(outcome), flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    if sizes == list(SCALES):
        DOC.write_text(doc_with_table(DOC.read_text(), results))
    print(f"written to {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


if __name__ == "__main__":
    main()

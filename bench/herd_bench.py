"""The wake-up herd: N runs leave their Wait in the same second and call the Attempt Task at once.

What it models, in virtual time (no sleeping) with a seeded RNG:

* **Lambda's concurrency.** An account limit of C in-flight invocations (the default 1,000), and
  Lambda's per-function scaling rate: at most 1,000 new execution environments per 10 seconds for
  each function, refilled continuously and never banked beyond 1,000 (Lambda scaling behavior,
  the model since November 2023; it replaced the regional initial burst of 500 to 3,000 followed by
  +500 a minute). An environment, once created, stays warm and is reused. An invoke that finds C
  invocations in flight, or no warm idle environment and no scaling headroom, is throttled
  (`Lambda.TooManyRequestsException`).
* **The attempt.** Each run's Attempt invocation occupies one unit of concurrency for its duration,
  drawn uniformly from [D/2, 3D/2] (mean D: the agent call plus the step's own reads and writes).
* **The state machine's retrier**, read from statemachine/runner.asl.json as it is now: the first
  retrier of the Attempt Task that matches `Lambda.TooManyRequestsException` (by name,
  `States.TaskFailed` or `States.ALL`), with Step Functions' semantics and defaults — retry k
  (0-based) waits min(IntervalSeconds x BackoffRate^k, MaxDelaySeconds), with `JitterStrategy`
  FULL a uniform draw in [0, that); after MaxAttempts retries the run fails (the Catch records it
  failed). Each retry is one billed state transition and one more Lambda invoke request. The same
  model runs the retrier as it was before (`BEFORE_RETRIER`, commit 212877c) for comparison.
* **Jitter.** With a trigger's `jitterSeconds` J each run's start is spread over [0, J), as the
  deterministic offset of `sundial.domain.schedule.jitter_offset` is (a hash, uniform enough).

What it leaves out: Step Functions' own state-transition throttling (a token bucket per account
and region; it delays transitions rather than failing them, so it spreads the herd further — the
peak rate of retry transitions is reported to compare against it); Lambda's request-rate limit
(10 x concurrency per second: it throttles requests that would be throttled anyway while the
concurrency is used up); other functions sharing the account's concurrency (the dispatcher, the
API); environments reclaimed when idle; cold-start time (part of D); the Prepare Task (it ran when
the run was claimed, before the Wait); and the missed-run rule, which would record a run whose
first attempt starts more than the trigger's catch-up window late as missed (the count of runs
started later than the default window, 3,600 s, is reported).

Figures: runs failed by throttling, the drain (last run finished) against the physical limit
N x D / C, the start lag (first attempt's start minus its scheduled start) p50/p99/max, and the
throttle retries spent (state transitions and invoke requests). Written to bench/results/herd.json.
"""

from __future__ import annotations

import heapq
import json
import math
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sundial_local.template import asl_path

RESULTS = Path(__file__).resolve().parent / "results" / "herd.json"
THROTTLE_ERROR = "Lambda.TooManyRequestsException"
# The Attempt Task's retrier that matched Lambda throttling at commit 212877c, before it had its own.
BEFORE_RETRIER: dict[str, Any] = {
    "ErrorEquals": [
        "Lambda.ServiceException",
        "Lambda.AWSLambdaException",
        "Lambda.SdkClientException",
        "Lambda.TooManyRequestsException",
        "Lambda.ClientExecutionTimeoutException",
    ],
    "IntervalSeconds": 1,
    "MaxAttempts": 6,
    "BackoffRate": 2,
    "MaxDelaySeconds": 30,
    "JitterStrategy": "FULL",
}
ACCOUNT_CONCURRENCY = 1_000
SCALING_BURST = 1_000  # new execution environments per function, refilled over SCALING_WINDOW
SCALING_WINDOW = 10.0
DEFAULT_CATCH_UP_WINDOW = 3_600.0
TRANSITION_PRICE = 0.000025  # Step Functions Standard, per state transition (docs/cost.md)
REQUEST_PRICE = 0.0000002  # Lambda, per request
SEED = 12


@dataclass(frozen=True)
class Retrier:
    """A Step Functions retrier with the language's defaults for the fields it leaves out."""

    interval_seconds: float = 1.0
    max_attempts: int = 3
    backoff_rate: float = 2.0
    max_delay_seconds: float | None = None
    full_jitter: bool = False

    @classmethod
    def from_asl(cls, retrier: dict[str, Any]) -> Retrier:
        return cls(
            interval_seconds=float(retrier.get("IntervalSeconds", 1)),
            max_attempts=int(retrier.get("MaxAttempts", 3)),
            backoff_rate=float(retrier.get("BackoffRate", 2.0)),
            max_delay_seconds=float(retrier["MaxDelaySeconds"]) if "MaxDelaySeconds" in retrier else None,
            full_jitter=retrier.get("JitterStrategy", "NONE") == "FULL",
        )

    def ceiling(self, retry: int) -> float:
        """The wait before retry `retry` (0-based) without jitter."""
        delay = self.interval_seconds * self.backoff_rate**retry
        return delay if self.max_delay_seconds is None else min(delay, self.max_delay_seconds)

    def delay(self, retry: int, rng: random.Random) -> float:
        ceiling = self.ceiling(retry)
        return rng.uniform(0.0, ceiling) if self.full_jitter else ceiling

    def mean_budget_seconds(self) -> float:
        """Expected time a run spends waiting between throttled tries before the retrier gives up."""
        total = sum(self.ceiling(retry) for retry in range(self.max_attempts))
        return total / 2 if self.full_jitter else total


def throttle_retrier(asl: dict[str, Any], state: str = "Attempt") -> dict[str, Any]:
    """The first retrier of `state` that Step Functions would apply to Lambda throttling."""
    for retrier in asl["States"][state].get("Retry", []):
        if {THROTTLE_ERROR, "States.TaskFailed", "States.ALL"} & set(retrier["ErrorEquals"]):
            return dict(retrier)
    raise LookupError(f"{state} does not retry {THROTTLE_ERROR}")


def current_retrier(state: str = "Attempt") -> dict[str, Any]:
    return throttle_retrier(json.loads(asl_path().read_text()), state)


@dataclass(frozen=True)
class Herd:
    runs: int
    attempt_seconds: float
    concurrency: int = ACCOUNT_CONCURRENCY
    jitter_seconds: float = 0.0


@dataclass
class Row:
    retrier: str
    runs: int
    concurrency: int
    attempt_seconds: float
    jitter_seconds: float
    failed_by_throttling: int
    started: int
    drain_seconds: float
    physical_limit_seconds: float
    drain_vs_limit: float
    start_lag_p50: float
    start_lag_p99: float
    start_lag_max: float
    started_after_default_catch_up_window: int
    throttle_retries: int
    throttle_retries_per_run_mean: float
    throttle_retries_per_run_max: int
    peak_retry_transitions_per_second: int
    peak_retry_transitions_per_second_after_first_minute: int
    retry_cost_per_run_usd: float


def _percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(fraction * len(ordered)) - 1)]


def simulate(herd: Herd, retrier: Retrier, label: str, seed: int = SEED) -> Row:
    rng = random.Random(seed)
    scaling_rate = SCALING_BURST / SCALING_WINDOW
    wakes = [rng.uniform(0.0, herd.jitter_seconds) if herd.jitter_seconds else 0.0 for _ in range(herd.runs)]
    tries: list[tuple[float, int, int]] = [(wake, run, 0) for run, wake in enumerate(wakes)]  # (at, run, retries)
    heapq.heapify(tries)
    finishing: list[float] = []
    busy = idle = 0
    tokens, refilled_at = float(SCALING_BURST), 0.0
    lags: list[float] = []
    retries_of_started: list[int] = []
    failed = retries = 0
    per_second: dict[int, int] = {}
    drain = 0.0
    while tries:
        at, run, used = heapq.heappop(tries)
        while finishing and finishing[0] <= at:
            heapq.heappop(finishing)
            busy, idle = busy - 1, idle + 1
        tokens = min(float(SCALING_BURST), tokens + (at - refilled_at) * scaling_rate)
        refilled_at = at
        if busy < herd.concurrency and (idle or tokens >= 1.0):
            if idle:
                idle -= 1
            else:
                tokens -= 1.0
            busy += 1
            end = at + rng.uniform(0.5, 1.5) * herd.attempt_seconds
            heapq.heappush(finishing, end)
            drain = max(drain, end)
            lags.append(at - wakes[run])
            retries_of_started.append(used)
            continue
        if used >= retrier.max_attempts:
            failed += 1
            continue
        retry_at = at + retrier.delay(used, rng)
        retries += 1
        per_second[int(retry_at)] = per_second.get(int(retry_at), 0) + 1
        heapq.heappush(tries, (retry_at, run, used + 1))
    physical = herd.runs * herd.attempt_seconds / herd.concurrency
    return Row(
        retrier=label,
        runs=herd.runs,
        concurrency=herd.concurrency,
        attempt_seconds=herd.attempt_seconds,
        jitter_seconds=herd.jitter_seconds,
        failed_by_throttling=failed,
        started=len(lags),
        drain_seconds=round(drain, 1),
        physical_limit_seconds=round(physical, 1),
        drain_vs_limit=round(drain / physical, 3) if physical else 0.0,
        start_lag_p50=round(_percentile(lags, 0.50), 1),
        start_lag_p99=round(_percentile(lags, 0.99), 1),
        start_lag_max=round(max(lags, default=0.0), 1),
        started_after_default_catch_up_window=sum(1 for lag in lags if lag > DEFAULT_CATCH_UP_WINDOW),
        throttle_retries=retries,
        throttle_retries_per_run_mean=round(retries / herd.runs, 2),
        throttle_retries_per_run_max=max(retries_of_started, default=0) if not failed else retrier.max_attempts,
        peak_retry_transitions_per_second=max(per_second.values(), default=0),
        peak_retry_transitions_per_second_after_first_minute=max(
            (count for second, count in per_second.items() if second >= 60), default=0
        ),
        retry_cost_per_run_usd=round(retries / herd.runs * (TRANSITION_PRICE + REQUEST_PRICE), 6),
    )


HEADLINE = Herd(runs=100_000, attempt_seconds=10.0)
HERDS = (
    HEADLINE,
    Herd(runs=100_000, attempt_seconds=2.0),
    Herd(runs=100_000, attempt_seconds=30.0),
    Herd(runs=100_000, attempt_seconds=60.0),
    Herd(runs=100_000, attempt_seconds=10.0, jitter_seconds=300.0),
    Herd(runs=100_000, attempt_seconds=10.0, jitter_seconds=1_200.0),
)


def run(herds: tuple[Herd, ...] = HERDS) -> dict[str, Any]:
    before, after = Retrier.from_asl(BEFORE_RETRIER), Retrier.from_asl(current_retrier())
    rows = [
        simulate(herd, retrier, label) for herd in herds for label, retrier in (("before", before), ("after", after))
    ]
    return {
        "model": {
            "account_concurrency": ACCOUNT_CONCURRENCY,
            "scaling": f"{SCALING_BURST} new environments per function per {SCALING_WINDOW:g} s, refilled continuously",
            "attempt_seconds": "uniform in [D/2, 3D/2]",
            "seed": SEED,
        },
        "retriers": {
            "before": {**BEFORE_RETRIER, "mean_budget_seconds": round(before.mean_budget_seconds(), 1)},
            "after": {**current_retrier(), "mean_budget_seconds": round(after.mean_budget_seconds(), 1)},
        },
        "rows": [asdict(row) for row in rows],
    }


def main() -> None:
    figures = run()
    for label, retrier in figures["retriers"].items():
        print(
            f"{label:<6} retrier: interval {retrier['IntervalSeconds']} s x{retrier['BackoffRate']},"
            f" cap {retrier.get('MaxDelaySeconds')} s, {retrier['MaxAttempts']} retries,"
            f" {retrier.get('JitterStrategy', 'NONE')} jitter: ~{retrier['mean_budget_seconds']:g} s of waiting"
        )
    print(
        f"{'retrier':<7} {'N':>7} {'D s':>5} {'jitter':>6} {'failed':>7} {'drain s':>8} {'limit s':>8} {'ratio':>6}"
        f" {'lag p50':>8} {'p99':>7} {'max':>7} {'>1h':>6} {'retries/run':>11} {'max':>4}"
        f" {'peak/s>60s':>10} {'$/run':>9}"
    )
    for row in figures["rows"]:
        print(
            f"{row['retrier']:<7} {row['runs']:>7} {row['attempt_seconds']:>5g} {row['jitter_seconds']:>6g}"
            f" {row['failed_by_throttling']:>7} {row['drain_seconds']:>8g} {row['physical_limit_seconds']:>8g}"
            f" {row['drain_vs_limit']:>6g} {row['start_lag_p50']:>8g} {row['start_lag_p99']:>7g}"
            f" {row['start_lag_max']:>7g} {row['started_after_default_catch_up_window']:>6}"
            f" {row['throttle_retries_per_run_mean']:>11g} {row['throttle_retries_per_run_max']:>4}"
            f" {row['peak_retry_transitions_per_second_after_first_minute']:>10} {row['retry_cost_per_run_usd']:>9.6f}"
        )
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(RESULTS.parents[2])}")


if __name__ == "__main__":
    main()

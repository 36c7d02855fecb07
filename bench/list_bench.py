"""List latency: the API handler's own time for one page of 50 triggers, through the real handler.

The tables come from template.yaml in moto, and 50 triggers of one agent are created through the
API: ten cron expressions in five zones (some with bounds, a run limit or jitter) and ten intervals,
as one team's triggers look. Each figure is the median, over repeated GETs of the page in one warm
process, of the handler's time less the time spent inside DynamoDB calls (botocore and moto): what
Sundial itself spends on a list, the rest being the table's latency in AWS.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from moto import mock_aws

from bench.runner_bench import _environment

RESULTS = Path(__file__).resolve().parent / "results" / "list.json"
ROWS = 50
REQUESTS = 30
CRONS = [
    ("0 9 * * 1-5", "Europe/Berlin"),
    ("*/15 * * * *", "UTC"),
    ("30 6 1 * *", "America/New_York"),
    ("0 */2 * * *", "Asia/Tokyo"),
    ("15 8 * * 1", "Australia/Lord_Howe"),
    ("0 0 * * *", "UTC"),
    ("5 4 * * SUN", "Europe/Berlin"),
    ("0 12 1,15 * *", "America/New_York"),
    ("*/5 9-17 * * MON-FRI", "Asia/Tokyo"),
    ("@daily", "Australia/Lord_Howe"),
]


def trigger_bodies() -> list[dict[str, Any]]:
    """ROWS create requests: each cron expression four times (varied extras), and ten intervals."""
    bodies: list[dict[str, Any]] = []
    for number in range(ROWS - 10):
        expression, zone = CRONS[number % len(CRONS)]
        body: dict[str, Any] = {"name": f"cron {number}", "cronExpression": expression, "cronTimezone": zone}
        if number % 4 == 1:
            body["endAt"] = "2027-06-01T00:00:00Z"
        if number % 4 == 2:
            body["maxRuns"] = 10
        if number % 4 == 3:
            body["jitterSeconds"] = 300
        bodies.append(body)
    bodies += [{"name": f"interval {n}", "intervalSeconds": 600 * (n + 1)} for n in range(10)]
    return bodies


@contextmanager
def timing_aws_calls(spent: list[float]) -> Iterator[None]:
    """Adds the seconds each botocore call takes (request building, moto's answer, parsing) to `spent`."""
    from botocore.client import BaseClient

    original = vars(BaseClient)["_make_api_call"]  # private in the stubs

    def timed(self: BaseClient, operation: str, params: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(self, operation, params)
        finally:
            spent.append(time.perf_counter() - start)

    with mock.patch.object(BaseClient, "_make_api_call", timed):
        yield


def measure(requests: int = REQUESTS) -> dict[str, Any]:

    from tests.conftest import BASE, MOTO_CONFIG, ApiClient, FakeClock, build_stack

    with mock_aws(config=MOTO_CONFIG), pytest.MonkeyPatch.context() as monkeypatch:
        import api_handler

        deps = build_stack(FakeClock()).deps
        monkeypatch.setattr(api_handler, "deps", lambda: deps)
        api = ApiClient()
        for body in trigger_bodies():
            created = api.request("POST", BASE, body)
            assert created.status == 201, created.body
        totals: list[float] = []
        own: list[float] = []
        for _ in range(requests):
            spent: list[float] = []
            with timing_aws_calls(spent):
                start = time.perf_counter()
                page = api.request("GET", BASE, query={"limit": ROWS})
                total = time.perf_counter() - start
            assert (page.status, len(page.body["data"])) == (200, ROWS), page.body
            totals.append(total)
            own.append(total - sum(spent))
    return {
        "rows": ROWS,
        "requests": requests,
        "handler_ms": round(statistics.median(totals) * 1000, 2),
        "handler_own_ms": round(statistics.median(own) * 1000, 2),
        "dynamodb_calls_ms": round(statistics.median(t - o for t, o in zip(totals, own, strict=True)) * 1000, 2),
    }


def main() -> None:
    _environment()
    figures = measure()
    print(json.dumps(figures), flush=True)
    model = " ".join((__doc__ or "").split())
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"model": model, **figures}, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(RESULTS.parents[2])}")


if __name__ == "__main__":
    main()

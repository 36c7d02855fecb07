"""Retrying AWS throttling: capped exponential backoff with full jitter, inside a time budget."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import ClientError

T = TypeVar("T")
THROTTLING_CODES = frozenset(
    {
        "ThrottlingException",
        "Throttling",
        "ProvisionedThroughputExceededException",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "InternalServerError",
        "ServiceUnavailable",
    }
)


def error_code(error: BaseException | None) -> str | None:
    """The AWS error code behind an SDK exception, also one a client library wraps (pynamodb keeps it as `cause`)."""
    for _hop in range(4):
        if error is None:
            return None
        if isinstance(error, ClientError):
            return str(error.response.get("Error", {}).get("Code"))
        error = getattr(error, "cause", None) or error.__cause__
    return None


@dataclass
class Backoff:
    """Retries AWS throttling with capped exponential backoff and full jitter; `sleep` is injectable.

    Gives up after `attempts` tries, or sooner once the next pause would end past `budget_seconds`
    of elapsed time (when set) — the calls' own time included, as measured by `monotonic`. The SDK
    clients it wraps make one HTTP attempt per call (see sundial.deps), so every attempt is
    one of its tries and the budget bounds them all.
    """

    attempts: int = 8
    base_seconds: float = 0.05
    cap_seconds: float = 2.0
    budget_seconds: float | None = None
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    on_retry: Callable[[str], None] = lambda _code: None

    def call(self, operation: Callable[[], T]) -> T:
        started = self.monotonic()
        for attempt in range(self.attempts):
            try:
                return operation()
            except Exception as error:
                code = error_code(error)
                if code not in THROTTLING_CODES or attempt == self.attempts - 1:
                    raise
                delay = random.uniform(0, min(self.cap_seconds, self.base_seconds * 2**attempt))
                elapsed = self.monotonic() - started
                if self.budget_seconds is not None and elapsed + delay > self.budget_seconds:
                    raise
                self.on_retry(code)
                self.sleep(delay)
        raise AssertionError("unreachable")

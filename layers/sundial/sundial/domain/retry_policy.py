"""Retry maths of a run (SPEC §5) and the longest a run can take, which bounds record retention."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import timedelta

RETRY_DELAY_CAP_SECONDS = 6 * 3600
RETRY_JITTER = 0.3
# The Attempt Task's timeout is the trigger's HTTP timeout plus room for the step's own reads and writes.
TASK_TIMEOUT_MARGIN_SECONDS = 60
DEFAULT_TIMEOUT_SECONDS = 780
# The largest values the API accepts (SPEC §2) and the longest a claimed run waits for its instant.
MOST_RETRIES = 10
LONGEST_RETRY_DELAY_SECONDS = 3600
LONGEST_TIMEOUT_SECONDS = 780
LONGEST_LOOKAHEAD_SECONDS = 600


def retry_delay_seconds(base_seconds: int, retry: int, rng: Callable[[], float] = random.random) -> int:
    """Wait before retry `retry` (1…maxRetries): base * 2^(retry-1) * (1 + U[0, 0.3)), capped at 6 h.

    Rounded down to whole seconds (a Wait state's SecondsPath takes integers), which keeps it
    within the bounds for the integer bases the API allows.
    """
    delay = base_seconds * 2 ** (retry - 1) * (1 + RETRY_JITTER * rng())
    return min(int(delay), RETRY_DELAY_CAP_SECONDS)


def longest_run(
    max_retries: int = MOST_RETRIES,
    retry_delay: int = LONGEST_RETRY_DELAY_SECONDS,
    timeout: int = LONGEST_TIMEOUT_SECONDS,
) -> timedelta:
    """The longest a run can last from its execution's start: the wait, every attempt and every retry wait."""
    attempts = (max_retries + 1) * (timeout + TASK_TIMEOUT_MARGIN_SECONDS)
    waits = sum(retry_delay_seconds(retry_delay, retry, lambda: 1.0) for retry in range(1, max_retries + 1))
    return timedelta(seconds=LONGEST_LOOKAHEAD_SECONDS + attempts + waits)


# Unfinished records are kept at least this long: beyond any run the API allows (~54 h), with room
# for Step Functions' own retries of the runner's Lambda Tasks.
UNFINISHED_RETENTION = timedelta(days=4)

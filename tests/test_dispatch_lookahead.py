"""The adaptive lookahead (domain.lookahead): beyond the base lookahead a tick claims what the start
quota needs claimed now, so a herd due in one minute is started before its instant."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sundial.domain.lookahead import claim_now

from tests.conftest import START, FakeClock
from tests.dispatch_support import dispatch_env, dispatcher, executions, seed_many

BASE = timedelta(seconds=120)
LONGEST = timedelta(seconds=600)


@pytest.mark.parametrize(
    ("rank", "due_in", "claimed"),
    [
        pytest.param(1, 120, True, id="inside-the-base-lookahead"),
        pytest.param(10**6, 601, False, id="beyond-the-longest-lookahead"),
        pytest.param(57_600, 300, False, id="the-next-ticks-can-start-it-in-time"),
        pytest.param(57_601, 300, True, id="one-more-than-0.8-of-the-quota-admits-after-the-next-tick"),
        pytest.param(1, 121, False, id="just-beyond-the-lookahead-with-nothing-before-it"),
        pytest.param(1, 59, True, id="due-before-the-next-tick-with-a-short-lookahead"),
    ],
)
def test_a_row_beyond_the_lookahead_is_claimed_only_when_waiting_a_tick_would_start_it_late(
    rank: int, due_in: float, claimed: bool
) -> None:
    due = START + timedelta(seconds=due_in)
    base = BASE if due_in != 59 else timedelta(seconds=30)
    assert claim_now(rank, due, START, base, LONGEST, 300) is claimed


@pytest.mark.slow
def test_a_tick_claims_ahead_the_part_of_a_herd_the_quota_could_not_start_in_time(clock: FakeClock) -> None:
    """200 occurrences due in 400 s at a quota of 0.5 starts/s: the 136 the next ticks can start (at 0.8
    of the quota) wait; the last 64 in due order are claimed now, waiting in their executions."""
    clock.set(START - timedelta(seconds=400 + 600))
    with dispatch_env(clock, DISPATCH_START_RATE_PER_SECOND=0.5) as env:
        seed_many(env, 200, cron_expression="0 15 * * *")
        clock.set(START - timedelta(seconds=400))
        report = dispatcher(env).tick()
        assert (report.counts["dispatched"], report.counts["claimed_ahead"]) == (64, 64)
        started = executions(env)
        assert {run["input"]["startsAt"] for run in started} == {"2026-11-26T15:00:00Z"}

        clock.set(START - timedelta(seconds=100))  # inside the base lookahead: the rest is claimed
        report = dispatcher(env).tick()
        assert (report.counts["dispatched"], report.counts["claimed_ahead"]) == (136, 0)
        assert len(executions(env)) == 200

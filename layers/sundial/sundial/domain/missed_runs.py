"""The missed-run rule (SPEC §4), shared by every path on which an occurrence can start late.

The dispatcher applies it when it plans a claim after an outage; the runner applies it again when a
run's first attempt comes, so a claim re-driven hours after its start failed, or a run resumed after
the local stack was down, obeys the same rule.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

# An occurrence at most this late is on time and runs whatever its catch-up window: it matches the
# 60 s a runAt may lie in the past and absorbs a late tick. Older ones are missed.
ON_TIME_GRACE = timedelta(seconds=60)


def catch_up_window(catch_up_window_seconds: int) -> timedelta:
    """How late a missed occurrence may still run: the trigger's window, never less than the grace."""
    return max(timedelta(seconds=catch_up_window_seconds), ON_TIME_GRACE)


def _unjittered(nominal: datetime) -> datetime:
    return nominal


def may_start(
    occurrence: datetime,
    following: datetime | None,
    now: datetime,
    catch_up_window_seconds: int,
    start_of: Callable[[datetime], datetime] = _unjittered,
) -> bool:
    """Whether `occurrence` (its nominal instant) may start at `now`.

    `following` is the next occurrence of the schedule the occurrence was claimed under (None when
    that schedule had no other before it ended). Lateness counts from when the occurrence was to
    start (`start_of`: its instant plus the trigger's jitter). On time (within the grace) it always
    may. Later, only as the most recent missed occurrence (the following one has not come due by
    now) and only within the trigger's catch-up window.
    """
    lateness = now - start_of(occurrence)
    if lateness <= ON_TIME_GRACE:
        return True
    if lateness > catch_up_window(catch_up_window_seconds):
        return False
    return following is None or start_of(following) > now

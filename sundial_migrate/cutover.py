"""Hand EventBridge schedules over to Sundial at the cutover instant T, with EventBridge's own bounds.

A recurring schedule gets `EndDate = T` ("the date before which it can invoke"), so it fires only
before T while its Sundial trigger starts at T: no instant runs on both sides, none on neither, and
nothing has to happen at T itself. A one-time schedule imported (it runs at or after T) is disabled
at once: it had nothing to fire before T, and EventBridge ignores EndDate for at() schedules.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

UPDATABLE = (
    "Description",
    "ScheduleExpressionTimezone",
    "StartDate",
    "EndDate",
    "KmsKeyArn",
    "ActionAfterCompletion",
    "State",
)


def hand_over(scheduler: Any, schedule: dict[str, Any], cutover_at: datetime) -> str:
    """UpdateSchedule replaces the whole schedule, so every field is sent back with the one change."""
    request: dict[str, Any] = {
        "Name": schedule["Name"],
        "GroupName": schedule.get("GroupName", "default"),
        "ScheduleExpression": schedule["ScheduleExpression"],
        "FlexibleTimeWindow": schedule["FlexibleTimeWindow"],
        "Target": schedule["Target"],
        **{name: schedule[name] for name in UPDATABLE if schedule.get(name) is not None},
    }
    if str(schedule["ScheduleExpression"]).startswith("at("):
        request["State"] = "DISABLED"
        change = "disabled (one-time, runs after the cutover)"
    else:
        end = schedule.get("EndDate")
        request["EndDate"] = min(end, cutover_at) if isinstance(end, datetime) else cutover_at
        change = f"ends before {cutover_at:%Y-%m-%dT%H:%M:%SZ}"
    scheduler.update_schedule(**request)
    return change

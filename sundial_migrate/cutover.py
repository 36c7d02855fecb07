"""Hand EventBridge schedules over to Sundial at the cutover instant T, with EventBridge's own bounds.

A recurring schedule gets `EndDate = T` ("the date before which it can invoke"), so it fires only
before T while its Sundial trigger starts at T: no instant runs on both sides, none on neither, and
nothing has to happen at T itself. A one-time schedule imported (it runs at or after T), or one that
starts at or after T, is disabled at once: it had nothing to fire before T (and EventBridge ignores
EndDate for at() schedules). The description records the hand-over and the state before it, so a
later import reads the schedule as it was and reports it unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sundial.domain.instants import format_instant

from sundial_migrate.aws_schedules import hand_over_marker, handed_over

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
    record = handed_over(schedule)
    if record is not None:
        return f"handed over at {format_instant(record.at)} already"
    start = schedule.get("StartDate")
    if str(schedule["ScheduleExpression"]).startswith("at(") or (isinstance(start, datetime) and start >= cutover_at):
        request["State"] = "DISABLED"
        change = "disabled (it has nothing to run before the cutover)"
    else:
        end = schedule.get("EndDate")
        request["EndDate"] = min(end, cutover_at) if isinstance(end, datetime) else cutover_at
        change = f"ends before {format_instant(cutover_at)}"
    request["Description"] = hand_over_marker(schedule, cutover_at)
    scheduler.update_schedule(**request)
    return change

"""EventBridge Scheduler schedules as Sundial trigger fields: converted exactly, or refused with the reason.

No I/O here. What Sundial's schedules cannot say (`L`, `W`, `#`, lists or steps of years, rates under
a minute, a wall time the clocks skip) is refused, never approximated. The rules, field by field, are
in docs/migration.md, which also says where the two schedulers' daylight-saving rules differ.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sundial.domain.instants import format_instant
from sundial.domain.schedule import ScheduleError, validate_timezone

WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")  # AWS numbers them 1-7 from Sunday
MAX_JITTER_SECONDS = 3600
MAX_RETRIES = 10
MAX_CATCH_UP_SECONDS = 604_800
RATE_UNITS = {"minute": 60, "minutes": 60, "hour": 3600, "hours": 3600, "day": 86_400, "days": 86_400}
ONE_SECOND = timedelta(seconds=1)
FIRST_YEAR, LAST_YEAR = 1970, 2199
# What `hand_over` appends to a source schedule's description: when, and the state it had before.
HANDED_OVER = re.compile(r"\s*\[sundial: handed over at (\S+), was (ENABLED|DISABLED)\]$")
MAX_DESCRIPTION = 512


class RefusedError(ValueError):
    """The schedule has no exact Sundial equivalent; the message says why."""


@dataclass
class Converted:
    """Trigger fields (wire names) for one schedule, and notes on what was mapped by a documented rule."""

    fields: dict[str, Any]
    notes: list[str] = field(default_factory=list)


AWS_ONLY_TERM = re.compile(r"L|LW|L-\d+|\d+W", re.IGNORECASE)  # last day, weekday nearest, …


def _plain_field(text: str, name: str) -> str:
    """Minutes, hours, day of month and month mean what they mean in Sundial's cron."""
    if "?" in text or "#" in text or any(AWS_ONLY_TERM.fullmatch(term) for term in text.split(",")):
        raise RefusedError(f"{name} '{text}' uses L, W, # or ?, which Sundial's cron has no equivalent for")
    return text


def _weekday_value(token: str) -> int:
    upper = token.upper()
    if upper in WEEKDAYS:
        return WEEKDAYS.index(upper)
    if not upper.isdigit() or not 1 <= int(upper) <= 7:
        raise RefusedError(f"day-of-week value '{token}' is not 1-7 or SUN-SAT")
    return int(upper) - 1


def _weekdays(text: str) -> set[int]:
    """AWS day-of-week terms (1-7 = SUN-SAT, names, ranges, steps) as Sundial's 0-6 weekdays."""
    if re.search(r"[L#]", text, re.IGNORECASE):
        raise RefusedError(f"day-of-week '{text}' uses L or #, which Sundial's cron has no equivalent for")
    days: set[int] = set()
    for term in text.split(","):
        base, _, step_text = term.partition("/")
        step = int(step_text) if step_text.isdigit() and int(step_text) > 0 else None
        if step_text and step is None:
            raise RefusedError(f"day-of-week step '{term}' is not a positive number")
        if base == "*":
            first, last = 0, 6
        elif "-" in base:
            start, _, end = base.partition("-")
            first, last = _weekday_value(start), _weekday_value(end)
            if first > last:
                raise RefusedError(f"day-of-week range '{base}' runs backwards")
        else:
            first = _weekday_value(base)
            last = 6 if step else first
        days.update(range(first, last + 1, step or 1))
    return days


def _weekday_field(text: str) -> str:
    if text == "?":
        return "*"
    days = sorted(_weekdays(text))
    if len(days) == 7:
        return "*"
    runs: list[str] = []
    start = previous = days[0]
    for day in [*days[1:], None]:
        if day is not None and day == previous + 1:
            previous = day
            continue
        runs.append(WEEKDAYS[start] if start == previous else f"{WEEKDAYS[start]}-{WEEKDAYS[previous]}")
        if day is not None:
            start = previous = day
    return ",".join(runs)


def _year_bounds(text: str, zone: ZoneInfo) -> tuple[datetime | None, datetime | None]:
    """`*`, one year or one range of years: bounds from 1 January of the first to the end of the last."""
    if text == "*":
        return None, None
    match = re.fullmatch(r"(\d{4})(?:-(\d{4}))?", text)
    if match is None:
        raise RefusedError(f"year '{text}' is not *, a year or one range of years; Sundial has no year field")
    first = int(match.group(1))
    last = int(match.group(2) or first)
    if first > last:
        raise RefusedError(f"year range '{text}' runs backwards")
    if first < FIRST_YEAR or last > LAST_YEAR:
        raise RefusedError(f"year '{text}' is outside AWS's {FIRST_YEAR}-{LAST_YEAR}")
    start = datetime(first, 1, 1, tzinfo=zone)
    end = datetime(last + 1, 1, 1, tzinfo=zone) - ONE_SECOND
    return start.astimezone(UTC), end.astimezone(UTC)


def convert_cron(body: str, zone_name: str) -> tuple[str, datetime | None, datetime | None]:
    """AWS `cron(min hour dom month dow year)` as a 5-field cron and the bounds its year field implies."""
    parts = body.split()
    if len(parts) != 6:
        raise RefusedError(f"cron({body}) does not have AWS's six fields")
    minutes, hours, day_of_month, month, day_of_week, year = parts
    if day_of_month != "?" and day_of_week != "?":
        raise RefusedError(f"cron({body}) restricts both day-of-month and day-of-week; AWS requires one to be ?")
    zone = ZoneInfo(zone_name)
    fields = [
        _plain_field(minutes, "minutes"),
        _plain_field(hours, "hours"),
        "*" if day_of_month == "?" else _plain_field(day_of_month, "day-of-month"),
        _plain_field(month, "month"),
        _weekday_field(day_of_week),
    ]
    start, end = _year_bounds(year, zone)
    return " ".join(fields), start, end


def convert_rate(body: str) -> int:
    match = re.fullmatch(r"\s*(\d+)\s+([a-z]+)\s*", body)
    if match is None or match.group(2) not in RATE_UNITS or int(match.group(1)) < 1:
        raise RefusedError(f"rate({body}) is not 'rate(value minute|minutes|hour|hours|day|days)'")
    seconds = int(match.group(1)) * RATE_UNITS[match.group(2)]
    if not 60 <= seconds <= 31_536_000:
        raise RefusedError(f"rate({body}) is outside Sundial's intervals of 60 s to 365 days")
    return seconds


def _later(first: datetime | None, second: datetime | None) -> datetime | None:
    return max(filter(None, (first, second)), default=None)


def _earlier(first: datetime | None, second: datetime | None) -> datetime | None:
    return min(filter(None, (first, second)), default=None)


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _schedule_fields(
    schedule: dict[str, Any], zone_name: str, cutover_at: datetime | None, notes: list[str]
) -> dict[str, Any]:
    """cronExpression / runAt / intervalSeconds with their bounds. Sundial's bounds are inclusive;
    EventBridge's EndDate is exclusive ("before which"), so the end moves back one second."""
    expression = str(schedule.get("ScheduleExpression", ""))
    match = re.fullmatch(r"(cron|rate|at)\((.*)\)", expression.strip())
    if match is None:
        raise RefusedError(f"'{expression}' is not a cron(), rate() or at() expression")
    kind, body = match.groups()
    start = _aware(schedule.get("StartDate"))
    end_date = _aware(schedule.get("EndDate"))
    end = end_date - ONE_SECOND if end_date is not None else None
    if kind == "at":
        try:
            wall = datetime.fromisoformat(body.strip())
        except ValueError:
            raise RefusedError(f"at({body}) is not yyyy-mm-ddThh:mm:ss") from None
        zone = ZoneInfo(zone_name)
        run_at = wall.replace(tzinfo=zone).astimezone(UTC)
        if run_at.astimezone(zone).replace(tzinfo=None) != wall:
            raise RefusedError(f"at({body}) does not exist in {zone_name} (the clocks skip it)")
        if cutover_at is not None and run_at < cutover_at:
            raise RefusedError(f"at({body}) runs before the cutover, so it stays with EventBridge")
        return {"runAt": format_instant(run_at)}
    if kind == "cron":
        cron, year_start, year_end = convert_cron(body, zone_name)
        start, end = _later(start, year_start), _earlier(end, year_end)
        fields: dict[str, Any] = {"cronExpression": cron}
    else:
        seconds = convert_rate(body)
        anchor = start or _aware(schedule.get("CreationDate"))
        if anchor is None:
            raise RefusedError(f"rate({body}) has neither a StartDate nor a CreationDate to count from")
        if start is None:
            notes.append("rate counted from the schedule's CreationDate")
        if cutover_at is not None and anchor < cutover_at:
            # The same phase, from the first tick at or after the cutover.
            steps = -(-(cutover_at - anchor) // timedelta(seconds=seconds))
            anchor += timedelta(seconds=seconds * steps)
        return {
            "intervalSeconds": seconds,
            "startAt": format_instant(anchor),
            **({"endAt": format_instant(end)} if end else {}),
        }
    if cutover_at is not None:
        start = _later(start, cutover_at)
    if start is not None:
        fields["startAt"] = format_instant(start)
    if end is not None:
        fields["endAt"] = format_instant(end)
    return fields


def _run_policy(schedule: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    window = schedule.get("FlexibleTimeWindow") or {}
    if window.get("Mode") == "FLEXIBLE":
        seconds = int(window.get("MaximumWindowInMinutes", 0)) * 60
        if seconds > MAX_JITTER_SECONDS:
            raise RefusedError(f"a flexible window of {seconds // 60} minutes is over Sundial's 60 minutes of jitter")
        fields["jitterSeconds"] = seconds
    retry = (schedule.get("Target") or {}).get("RetryPolicy") or {}
    if "MaximumRetryAttempts" in retry:
        attempts = int(retry["MaximumRetryAttempts"])
        fields["maxRetries"] = min(attempts, MAX_RETRIES)
        if attempts > MAX_RETRIES:
            notes.append(f"retries capped at {MAX_RETRIES} (EventBridge had {attempts})")
    if "MaximumEventAgeInSeconds" in retry:
        fields["catchUpWindowSeconds"] = min(int(retry["MaximumEventAgeInSeconds"]), MAX_CATCH_UP_SECONDS)
    return fields


@dataclass(frozen=True)
class HandOver:
    """A schedule `hand_over` already ended at `at`: its state and description before that."""

    at: datetime
    state: str
    description: str


def handed_over(schedule: dict[str, Any]) -> HandOver | None:
    found = HANDED_OVER.search(str(schedule.get("Description") or ""))
    if found is None:
        return None
    at = _aware(found.group(1))
    if at is None:
        return None
    return HandOver(at, found.group(2), str(schedule.get("Description"))[: found.start()])


def hand_over_marker(schedule: dict[str, Any], cutover_at: datetime) -> str:
    """The description that records the hand-over, so later imports read the schedule as it was."""
    marker = f" [sundial: handed over at {format_instant(cutover_at)}, was {schedule.get('State', 'ENABLED')}]"
    return str(schedule.get("Description") or "")[: MAX_DESCRIPTION - len(marker)] + marker


def as_before_hand_over(
    schedule: dict[str, Any], cutover_at: datetime | None
) -> tuple[dict[str, Any], datetime | None]:
    """A handed-over schedule as it was before, with its recorded cutover: importing it again, with or
    without --cutover-at, then changes nothing (the EndDate and state the hand-over set are not its own)."""
    record = handed_over(schedule)
    if record is None:
        return schedule, cutover_at
    before = {**schedule, "State": record.state, "Description": record.description}
    if _aware(before.get("EndDate")) == record.at:
        before.pop("EndDate")
    return before, record.at


def convert_schedule(schedule: dict[str, Any], cutover_at: datetime | None = None) -> Converted:
    """One GetSchedule answer as trigger fields (no tenant, path or payload: the mapping file gives those)."""
    schedule, cutover_at = as_before_hand_over(schedule, cutover_at)
    zone_name = str(schedule.get("ScheduleExpressionTimezone") or "UTC")
    try:
        validate_timezone(zone_name)
    except ScheduleError as error:
        raise RefusedError(f"time zone: {error}") from None
    notes: list[str] = []
    try:
        fields = _schedule_fields(schedule, zone_name, cutover_at, notes)
        fields.update(_run_policy(schedule, notes))
    except RefusedError:
        raise
    except (ValueError, TypeError, AttributeError) as malformed:
        raise RefusedError(f"malformed schedule: {malformed}") from None
    if "runAt" not in fields:
        fields["cronTimezone"] = zone_name
    fields["enabled"] = schedule.get("State", "ENABLED") == "ENABLED"
    if schedule.get("Description"):
        fields["description"] = schedule["Description"]
    return Converted(fields, notes)

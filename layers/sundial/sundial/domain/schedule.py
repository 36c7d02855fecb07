"""When triggers fire: cron, interval and one-time schedules, their bounds and jitter (SPEC §4).

Sundial parses cron expressions itself, so that every error names the cron field at fault and
cronsim's extensions (L, W, #, ?, seconds) are rejected. cronsim then does the calendar arithmetic
on wall-clock time, and this module maps wall-clock matches to UTC by the Debian/Vixie DST rules
exactly as cronsim does for fixed-time jobs (its wildcard path loses runs under 30-minute shifts).
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import re
import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from cron_descriptor import ExpressionDescriptor, FormatError, Options
from cron_descriptor.ExpressionParser import ExpressionParser
from cron_descriptor.GetText import GetText
from cronsim import CronSim

from sundial.domain.errors import ScheduleError
from sundial.domain.instants import format_instant

MACROS: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

_MAX_EXPRESSION_LENGTH = 1000
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MONTH_FULL_NAMES = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
# Day 29 counts for February: `0 0 29 2 *` fires in leap years.
_LONGEST_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_DIGITS = re.compile(r"[0-9]+")
_LAST_OR_WEEKDAY_EXTENSION = re.compile(r"[0-9]*L|[0-9]*L?W", re.IGNORECASE)

_TIMEZONE_KEY = re.compile(r"[A-Za-z0-9_+\-]+(?:/[A-Za-z0-9_+\-]+)*")
# Files under the zoneinfo path that load as zones but are not IANA names a user may pick.
_NOT_USER_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_NOT_USER_ZONE_DIRS = frozenset({"posix", "right"})
_MAX_TIMEZONE_LENGTH = 64


@dataclass(frozen=True)
class _CronField:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()
    first_name_value: int = 0

    def error(self, problem: str) -> ScheduleError:
        return ScheduleError("cronExpression", f"{self.name} field: {problem}")


_MINUTE = _CronField("minute", 0, 59)
_HOUR = _CronField("hour", 0, 23)
_DAY_OF_MONTH = _CronField("day-of-month", 1, 31)
_MONTH = _CronField("month", 1, 12, _MONTH_NAMES, first_name_value=1)
_DAY_OF_WEEK = _CronField("day-of-week", 0, 7, _WEEKDAY_NAMES)
_FIELDS = (_MINUTE, _HOUR, _DAY_OF_MONTH, _MONTH, _DAY_OF_WEEK)


def validate_timezone(name: str) -> ZoneInfo:
    """Load an IANA zone, refusing paths and system aliases that ZoneInfo would happily open."""
    if not name:
        raise ScheduleError("cronTimezone", "must not be empty")
    if (
        len(name) > _MAX_TIMEZONE_LENGTH
        or not _TIMEZONE_KEY.fullmatch(name)
        or name in _NOT_USER_ZONES
        or name.split("/", 1)[0] in _NOT_USER_ZONE_DIRS
    ):
        raise _unknown_timezone(name)
    try:
        return ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise _unknown_timezone(name) from None


def _unknown_timezone(name: str) -> ScheduleError:
    message = f"unknown time zone {name[:_MAX_TIMEZONE_LENGTH]!r}; use an IANA name such as 'Europe/Berlin'"
    suggestion = _zones_by_lower_name().get(name.lower())
    if suggestion is not None and suggestion not in _NOT_USER_ZONES:
        message += f" (did you mean {suggestion!r}?)"
    return ScheduleError("cronTimezone", message)


@functools.cache
def _zones_by_lower_name() -> dict[str, str]:
    """Built only on the error path: listing the zone files takes ~100 ms."""
    return {zone.lower(): zone for zone in zoneinfo.available_timezones()}


def _parse_value(token: str, spec: _CronField) -> int:
    if not token:
        raise spec.error("a number is missing")
    if _DIGITS.fullmatch(token):
        value = int(token)
        if not spec.low <= value <= spec.high:
            raise spec.error(f"{value} is out of range {spec.low}-{spec.high}")
        return value
    if spec.names and token.isascii() and token.upper() in spec.names:
        return spec.names.index(token.upper()) + spec.first_name_value
    if _LAST_OR_WEEKDAY_EXTENSION.fullmatch(token):
        raise spec.error(f"'{token}' is not supported (no 'L' last-day or 'W' nearest-weekday extensions)")
    if spec.names and token.isascii() and token.isalpha():
        hint = f"{spec.names[0]}-{spec.names[-1]} or {spec.low}-{spec.high}"
        raise spec.error(f"unknown name '{token}' (use {hint})")
    raise spec.error(f"'{token}' is not a number")


def _parse_term(term: str, spec: _CronField) -> tuple[str, set[int]]:
    """Parse one list entry; return it in the numeric form cronsim reads, and the values it allows."""
    base, has_step, step_text = term.partition("/")
    step = 1
    if has_step:
        if not _DIGITS.fullmatch(step_text):
            raise spec.error(f"step '{step_text}' is not a number")
        step = int(step_text)
        if not 1 <= step <= spec.high:
            raise spec.error(f"step {step} is out of range 1-{spec.high}")
    suffix = f"/{step}" if has_step else ""
    if base == "*":
        first, last = spec.low, spec.high
        normalized = f"*{suffix}"
    elif "-" in base:
        start_text, _, end_text = base.partition("-")
        first = _parse_value(start_text, spec)
        last = _parse_value(end_text, spec)
        if spec is _DAY_OF_WEEK and last == 0 < first and not _DIGITS.fullmatch(end_text):
            last = 7  # `FRI-SUN` means Friday through Sunday
        if first > last:
            raise spec.error(f"range '{base}' is reversed (start {first} is after end {last})")
        # cronsim reads a one-value range with a step, `5-5/3`, as `5/3` (5, 8, 11, ...).
        normalized = f"{first}-{last}{suffix}" if first < last else str(first)
    else:
        first = _parse_value(base, spec)
        # `5/10` means 5, 15, 25, ...: a stepped single value runs to the end of the field.
        last = spec.high if has_step else first
        normalized = f"{first}{suffix}"
    return normalized, set(range(first, last + 1, step))


def _parse_field(text: str, spec: _CronField) -> tuple[str, set[int]]:
    if "?" in text:
        raise spec.error("'?' is not supported; use '*'")
    if "#" in text:
        raise spec.error("'#' (nth weekday of the month) is not supported")
    normalized_terms: list[str] = []
    values: set[int] = set()
    for term in text.split(","):
        if not term:
            raise spec.error(f"empty entry in list '{text}'")
        normalized_term, term_values = _parse_term(term, spec)
        normalized_terms.append(normalized_term)
        values |= term_values
    return ",".join(normalized_terms), values


def _join(words: list[str], conjunction: str) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conjunction} {words[-1]}"


def _normalize_expression(expression: str) -> str:
    """Validate a cron expression or macro and return the numeric 5-field form cronsim evaluates."""
    if not expression:
        raise ScheduleError("cronExpression", "must not be empty")
    if len(expression) > _MAX_EXPRESSION_LENGTH:
        raise ScheduleError("cronExpression", f"must be at most {_MAX_EXPRESSION_LENGTH} characters")
    if expression.startswith("@"):
        expansion = MACROS.get(expression.lower())
        if expansion is None:
            raise ScheduleError("cronExpression", f"unknown macro '{expression}' (use one of {', '.join(MACROS)})")
        return expansion
    texts = expression.split()
    if len(texts) != len(_FIELDS):
        raise ScheduleError(
            "cronExpression",
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(texts)}",
        )
    parsed = [_parse_field(text, spec) for text, spec in zip(texts, _FIELDS, strict=True)]
    days, months = parsed[2][1], parsed[3][1]
    # Vixie cron: if either day field starts with `*`, a day must match both; otherwise either one
    # suffices, and every weekday comes round, so only the must-match-both case can never fire.
    days_must_both_match = texts[2].startswith("*") or texts[4].startswith("*")
    if days_must_both_match and not any(day <= _LONGEST_MONTH[month - 1] for day in days for month in months):
        day_words = [str(day) for day in sorted(days)]
        subject = f"day {day_words[0]} does" if len(day_words) == 1 else f"days {_join(day_words, 'and')} do"
        month_words = [_MONTH_FULL_NAMES[month - 1] for month in sorted(months)]
        raise _DAY_OF_MONTH.error(f"the expression never fires ({subject} not exist in {_join(month_words, 'or')})")
    return " ".join(normalized for normalized, _ in parsed)


def _require_aware(moment: datetime, field_name: str) -> None:
    if moment.utcoffset() is None:
        raise ScheduleError(field_name, "must be a timezone-aware datetime")


def _is_skipped(wall: datetime, zone: ZoneInfo) -> bool:
    """True for wall-clock times inside a spring-forward gap."""
    aware = wall.replace(tzinfo=zone)
    return aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != wall


def _first_instant_after_gap(wall: datetime, zone: ZoneInfo) -> datetime:
    """Where a fixed-time job whose time was skipped runs: like cronsim, step to the first real minute."""
    while _is_skipped(wall, zone):
        wall += timedelta(minutes=1)
    return wall.replace(tzinfo=zone).astimezone(UTC)


def _earliest_wall_clock(after: datetime, zone: ZoneInfo) -> datetime:
    """Naive local time to search from; inside an autumn overlap, back off by the shift so that the
    second pass of wall times before `after`'s own is not missed."""
    wall = after.astimezone(zone).replace(tzinfo=None)
    first_pass = wall.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second_pass = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
    return wall - max(second_pass - first_pass, timedelta(0))


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression in an IANA zone; constructing one validates it."""

    expression: str
    timezone: str = "UTC"
    _cron: str = field(init=False, repr=False, compare=False)
    _zone: ZoneInfo = field(init=False, repr=False, compare=False)
    _fixed_time: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cron = _normalize_expression(self.expression.strip())
        minute, hour = cron.split()[:2]
        object.__setattr__(self, "_cron", cron)
        object.__setattr__(self, "_zone", validate_timezone(self.timezone))
        # SPEC §4 / Vixie: a job is "wildcard" when its minute or hour field starts with `*`.
        object.__setattr__(self, "_fixed_time", not minute.startswith("*") and not hour.startswith("*"))

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> CronSchedule:
        """Validate user input; ScheduleError names the API field ("cronExpression" or "cronTimezone")."""
        return cls(expression.strip(), timezone)

    def occurrences_after(self, after: datetime) -> Iterator[datetime]:
        """Aware UTC instants strictly after `after`, increasing, without end."""
        _require_aware(after, "after")
        return self._occurrences(after)

    def _occurrences(self, after: datetime) -> Iterator[datetime]:
        # Fixed-time gap runs collapse onto one instant, and a search started inside an autumn
        # overlap revisits walls whose first pass is already past: keep only what is later.
        latest = after
        for instant in self._instants_from_wall(_earliest_wall_clock(after, self._zone)):
            if instant > latest:
                latest = instant
                yield instant

    def _instants_from_wall(self, start: datetime) -> Iterator[datetime]:
        """Map matching wall-clock times after `start` to UTC by the Vixie DST rules, in UTC order.

        cronsim only does calendar arithmetic here (naive datetimes). Its own aware-datetime path
        skips runs in zones with 30-minute shifts: it jumps ahead by wall-clock minutes in UTC, so
        on Lord Howe `30 * * * *` loses the second 01:30 and `* 2 * * *` loses 02:00-02:29.
        """
        second_passes: list[datetime] = []  # autumn-overlap repeats, due after the whole first pass
        for wall in CronSim(self._cron, start):
            if _is_skipped(wall, self._zone):
                if self._fixed_time:
                    yield _first_instant_after_gap(wall, self._zone)
                continue
            first_pass = wall.replace(tzinfo=self._zone, fold=0).astimezone(UTC)
            while second_passes and second_passes[0] < first_pass:
                yield second_passes.pop(0)
            yield first_pass
            second_pass = wall.replace(tzinfo=self._zone, fold=1).astimezone(UTC)
            if not self._fixed_time and second_pass != first_pass:
                second_passes.append(second_pass)

    def next_after(self, after: datetime) -> datetime:
        return next(self.occurrences_after(after))

    def next_runs(self, after: datetime, count: int) -> list[datetime]:
        return list(itertools.islice(self.occurrences_after(after), count))

    def describe(self) -> str:
        """English description in 24-hour time, e.g. "At 09:00, Monday through Friday (Europe/Berlin)"."""
        return f"{_cron_words(self._cron, self.expression)} ({self.timezone})"


# English in 24-hour time whatever the host's locale (cron-descriptor would follow it).
_DESCRIPTION_OPTIONS = Options(use_24hour_time_format=True, verbose=False, locale_code="en_US")


@functools.cache
def _english() -> GetText:
    return GetText(_DESCRIPTION_OPTIONS.locale_code, _DESCRIPTION_OPTIONS.locale_location)


class _EnglishDescriptor(ExpressionDescriptor):
    """cron-descriptor's describer with one English catalogue per process: its own constructor
    re-reads the translation file on every call, the larger part of describing an expression."""

    def __init__(self, cron: str) -> None:
        self._expression = cron
        self._options = _DESCRIPTION_OPTIONS
        self.get_text = _english()
        self._expression_parts = ExpressionParser(cron, _DESCRIPTION_OPTIONS).parse()


@functools.lru_cache(maxsize=4096)
def _cron_words(cron: str, expression: str) -> str:
    """The words for a normalized cron expression, once per process: a list repeats few expressions."""
    try:
        text: str = _EnglishDescriptor(cron).get_description()
    except FormatError:  # cron-descriptor cannot phrase some legal lists, e.g. `0 0 * * 1,*`
        text = f"Cron expression '{expression}'"
    return text


@dataclass(frozen=True)
class OneTimeSchedule:
    """A single run at `run_at`, normalized to aware UTC."""

    run_at: datetime

    def __post_init__(self) -> None:
        _require_aware(self.run_at, "runAt")
        object.__setattr__(self, "run_at", self.run_at.astimezone(UTC))

    def occurrences_after(self, after: datetime) -> Iterator[datetime]:
        _require_aware(after, "after")
        return iter([self.run_at] if self.run_at > after else [])

    def next_after(self, after: datetime) -> datetime | None:
        return next(self.occurrences_after(after), None)

    def next_runs(self, after: datetime, count: int) -> list[datetime]:
        return list(itertools.islice(self.occurrences_after(after), count))

    def describe(self) -> str:
        return f"Once at {format_instant(self.run_at)}"


def _duration_words(seconds: int) -> str:
    """`90 minutes`, `2 hours`, `1 day`, `45 seconds`: the largest unit that divides the duration."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
    return "1 second" if seconds == 1 else f"{seconds} seconds"


def _bound_words(moment: datetime) -> str:
    """`2026-12-01 09:00 UTC` (seconds shown only when there are some)."""
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
    return f"{text.removesuffix(':00')} UTC"


@dataclass(frozen=True)
class IntervalSchedule:
    """Every `interval_seconds` in absolute time from `anchor` (SPEC §4): no DST effect, like EventBridge `rate()`."""

    interval_seconds: int
    anchor: datetime

    def __post_init__(self) -> None:
        _require_aware(self.anchor, "startAt")
        if self.interval_seconds < 1:
            raise ScheduleError("intervalSeconds", "must be at least 1")
        object.__setattr__(self, "anchor", self.anchor.astimezone(UTC))

    def occurrences_after(self, after: datetime) -> Iterator[datetime]:
        _require_aware(after, "after")
        step = timedelta(seconds=self.interval_seconds)
        index = 0 if after < self.anchor else (after - self.anchor) // step + 1
        current = self.anchor + index * step
        while True:
            yield current
            current += step

    def next_after(self, after: datetime) -> datetime:
        return next(self.occurrences_after(after))

    def next_runs(self, after: datetime, count: int) -> list[datetime]:
        return list(itertools.islice(self.occurrences_after(after), count))

    def describe(self) -> str:
        return f"Every {_duration_words(self.interval_seconds)} from {_bound_words(self.anchor)}"


Recurring = CronSchedule | IntervalSchedule


@dataclass(frozen=True)
class BoundedSchedule:
    """A recurring schedule clipped to [start_at, end_at] (SPEC §4, bounds); either end may be open."""

    inner: Recurring
    start_at: datetime | None = None
    end_at: datetime | None = None

    def occurrences_after(self, after: datetime) -> Iterator[datetime]:
        _require_aware(after, "after")
        if self.start_at is not None and after < self.start_at:
            after = self.start_at - timedelta(microseconds=1)
        for instant in self.inner.occurrences_after(after):
            if self.end_at is not None and instant > self.end_at:
                return
            yield instant

    def next_after(self, after: datetime) -> datetime | None:
        return next(self.occurrences_after(after), None)

    def next_runs(self, after: datetime, count: int) -> list[datetime]:
        return list(itertools.islice(self.occurrences_after(after), count))

    def describe(self) -> str:
        text = self.inner.describe()
        if self.start_at is not None and not isinstance(self.inner, IntervalSchedule):
            text += f", from {_bound_words(self.start_at)}"
        if self.end_at is not None:
            text += f", until {_bound_words(self.end_at)}"
        return text


Schedule = CronSchedule | OneTimeSchedule | IntervalSchedule | BoundedSchedule


@functools.lru_cache(maxsize=4096)
def _parsed_cron(expression: str, timezone: str) -> CronSchedule:
    return CronSchedule.parse(expression, timezone)


def stored_schedule(
    cron_expression: str | None,
    cron_timezone: str,
    run_at: datetime | None,
    interval_seconds: int | None = None,
    start_at: datetime | None = None,
    end_at: datetime | None = None,
) -> Schedule:
    """The schedule of a stored, already validated trigger; each cron schedule is parsed once per process."""
    inner: Recurring
    if cron_expression is not None:
        inner = _parsed_cron(cron_expression, cron_timezone)
    elif interval_seconds is not None:
        if start_at is None:
            raise ValueError("a stored interval trigger has a startAt")
        inner = IntervalSchedule(int(interval_seconds), start_at)
    elif run_at is not None:
        return OneTimeSchedule(run_at)
    else:
        raise ValueError("a stored trigger has a cronExpression, an intervalSeconds or a runAt")
    if end_at is None and (start_at is None or isinstance(inner, IntervalSchedule)):
        return inner
    return BoundedSchedule(inner, start_at, end_at)


class ScheduleFields(Protocol):
    """What a stored trigger (or a due row) says about its schedule."""

    @property
    def cron_expression(self) -> str | None: ...
    @property
    def cron_timezone(self) -> str: ...
    @property
    def run_at(self) -> datetime | None: ...
    @property
    def interval_seconds(self) -> float | None: ...
    @property
    def start_at(self) -> datetime | None: ...
    @property
    def end_at(self) -> datetime | None: ...


def schedule_of(fields: ScheduleFields) -> Schedule:
    """The schedule of a stored trigger, a due row, or anything else carrying the schedule fields."""
    interval = int(fields.interval_seconds) if fields.interval_seconds is not None else None
    return stored_schedule(
        fields.cron_expression, fields.cron_timezone, fields.run_at, interval, fields.start_at, fields.end_at
    )


class NextOccurrence(Protocol):
    def next_after(self, after: datetime) -> datetime | None: ...


def jitter_offset(schedule: NextOccurrence, incarnation: str, jitter_seconds: int, nominal: datetime) -> int:
    """Seconds an occurrence starts after its nominal instant (SPEC §4, jitter).

    A hash of (incarnation, nominal instant) modulo the jitter, so previews, `nextRunAt` and every
    retry of a dispatch agree. The span is clipped to the gap before the next occurrence: jitter
    never moves an occurrence past the one after it (or past endAt), so occurrences start in order.
    """
    if jitter_seconds <= 0:
        return 0
    span = jitter_seconds
    following = schedule.next_after(nominal)
    if following is not None:
        span = max(1, min(span, int((following - nominal).total_seconds())))
    elif isinstance(schedule, BoundedSchedule) and schedule.end_at is not None:
        span = max(1, min(span, int((schedule.end_at - nominal).total_seconds()) + 1))  # no start past endAt
    digest = hashlib.sha256(f"{incarnation}\x00{format_instant(nominal)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % span


def start_of(schedule: NextOccurrence, incarnation: str, jitter_seconds: int, nominal: datetime) -> datetime:
    """When the occurrence nominally at `nominal` starts: the nominal instant plus its jitter offset."""
    return nominal + timedelta(seconds=jitter_offset(schedule, incarnation, jitter_seconds, nominal))


@functools.lru_cache(maxsize=4096)
def describe_stored(
    cron_expression: str | None,
    cron_timezone: str,
    run_at: datetime | None,
    interval_seconds: int | None,
    start_at: datetime | None,
    end_at: datetime | None,
    max_runs: int | None,
    jitter_seconds: int,
) -> str:
    """A stored trigger's description, keyed on everything its text depends on: a list describes every row."""
    schedule = stored_schedule(cron_expression, cron_timezone, run_at, interval_seconds, start_at, end_at)
    return schedule.describe() + describe_limits(max_runs, jitter_seconds)


def describe_limits(max_runs: int | None, jitter_seconds: int) -> str:
    """The part of a trigger's description after its schedule: `, at most 10 runs, with up to 5 minutes of jitter`."""
    text = ""
    if max_runs is not None:
        text += ", at most 1 run" if max_runs == 1 else f", at most {max_runs} runs"
    if jitter_seconds > 0:
        text += f", with up to {_duration_words(jitter_seconds)} of jitter"
    return text


def parse_run_at(value: str | datetime, now: datetime, *, max_past_seconds: int = 60) -> datetime:
    """Validate a one-time trigger's instant; the past tolerance absorbs clock skew and request latency."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ScheduleError(
                "runAt", f"must be an ISO-8601 date-time such as 2026-11-26T15:00:00Z, got {value[:64]!r}"
            ) from None
    else:
        parsed = value
    if parsed.utcoffset() is None:
        raise ScheduleError("runAt", "must include a time zone offset or Z")
    try:
        run_at = parsed.astimezone(UTC).replace(microsecond=0)
    except OverflowError:
        raise ScheduleError("runAt", "is outside the supported range of dates") from None
    if parsed < now - timedelta(seconds=max_past_seconds):
        raise ScheduleError(
            "runAt",
            f"must not be more than {max_past_seconds} s in the past "
            f"(got {format_instant(run_at)}, now is {format_instant(now)})",
        )
    return run_at

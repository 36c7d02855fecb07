"""API request and response models (camelCase on the wire), validated by pydantic.

Field rules are SPEC §2's. Cross-field rules that need the stored trigger or the clock (exactly
one of cronExpression/runAt/intervalSeconds, runAt not in the past, bounds in order) live in
`sundial.services.triggers`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StringConstraints,
)
from pydantic.alias_generators import to_camel

RESERVED_TRIGGER_IDS = frozenset({"upcoming-runs"})
MAX_PAYLOAD_BYTES = 32 * 1024
MAX_PAYLOAD_DEPTH = 32
MAX_TEMPLATE_CHARS = 16 * 1024
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"

Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]


def _not_reserved(value: str) -> str:
    if value in RESERVED_TRIGGER_IDS:
        raise ValueError(f"'{value}' is a reserved id")
    return value


def _require_iso_string(value: Any) -> Any:
    """Instants must be ISO-8601 strings; pydantic would otherwise accept Unix numbers."""
    if not isinstance(value, str | datetime):
        raise ValueError("must be an ISO-8601 string with Z or an offset, e.g. 2026-11-26T15:00:00Z")
    return value


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest in a JSON value (a scalar is 0), without recursion."""
    deepest, level = 0, [(value, 0)]
    while level:
        item, depth = level.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is not None:
            deepest = max(deepest, depth + 1)
            level.extend((child, depth + 1) for child in children)
    return deepest


def _invalid_text_at(value: Any) -> str | None:
    """The path (`a.b[2]`) of the first string or key in a JSON value that is not valid Unicode, if any."""
    pending: list[tuple[Any, str]] = [(value, "")]
    while pending:
        item, path = pending.pop()
        if isinstance(item, str) and not _is_valid_unicode(item):
            return path or "(the value)"
        if isinstance(item, dict):
            for key, child in item.items():
                if not _is_valid_unicode(key):
                    return f"{path}.{key!a}".lstrip(".")
                pending.append((child, f"{path}.{key}".lstrip(".")))
        elif isinstance(item, list):
            pending.extend((child, f"{path}[{index}]") for index, child in enumerate(item))
    return None


def _is_valid_unicode(text: str) -> bool:
    """False for lone surrogates (`"\ud800"` in JSON): valid JSON, but no UTF-8 can carry them to the agent."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _valid_unicode(value: str) -> str:
    if not _is_valid_unicode(value):
        raise ValueError("must be valid Unicode text (it contains a lone surrogate such as \\ud800)")
    return value


def _payload_within_limit(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """Size, nesting and text bounds: what would fail on every later run is refused now, naming where."""
    if value is None:
        return None
    bad_text = _invalid_text_at(value)
    if bad_text is not None:
        raise ValueError(f"must hold only valid Unicode text; {bad_text} contains a lone surrogate such as \\ud800")
    if _depth(value) > MAX_PAYLOAD_DEPTH:
        raise ValueError(f"must not nest objects and arrays more than {MAX_PAYLOAD_DEPTH} levels deep")
    if len(json.dumps(value, separators=(",", ":")).encode()) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"must serialise to at most {MAX_PAYLOAD_BYTES} bytes")
    return value


TriggerId = Annotated[Identifier, AfterValidator(_not_reserved)]
Name = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256), AfterValidator(_valid_unicode)
]
Description = Annotated[str, StringConstraints(max_length=2048), AfterValidator(_valid_unicode)]
CronText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=256)]
ZoneName = Annotated[str, StringConstraints(min_length=1, max_length=64)]


# Instants Sundial accepts: far enough from the calendar's ends that a schedule, its jitter and the
# next occurrence after any of them stay inside it.
EARLIEST_YEAR, LATEST_YEAR = 1970, 9000


def _representable_in_utc(value: datetime) -> datetime:
    """Year 1 with a positive offset (or 9999 with a negative one) has no UTC equivalent."""
    try:
        utc = value.astimezone(UTC)
    except OverflowError:
        raise ValueError("is out of the supported range of instants") from None
    if not EARLIEST_YEAR <= utc.year < LATEST_YEAR:
        raise ValueError(f"is out of the supported range of instants (years {EARLIEST_YEAR} to {LATEST_YEAR - 1})")
    return utc


Instant = Annotated[AwareDatetime, BeforeValidator(_require_iso_string), AfterValidator(_representable_in_utc)]
Payload = Annotated[dict[str, Any], AfterValidator(_payload_within_limit)]
MessageTemplate = Annotated[str, StringConstraints(max_length=MAX_TEMPLATE_CHARS), AfterValidator(_valid_unicode)]
MaxRetries = Annotated[StrictInt, Field(ge=0, le=10)]
RetryDelay = Annotated[StrictInt, Field(ge=10, le=3600)]
TimeoutSeconds = Annotated[StrictInt, Field(ge=30, le=780)]
RunAsUser = Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(_valid_unicode)]
Ref = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, pattern=r"^[^\s\x00-\x1f\x7f]+$"),
    AfterValidator(_valid_unicode),
]
CatchUpWindow = Annotated[StrictInt, Field(ge=0, le=604800)]
IntervalSeconds = Annotated[StrictInt, Field(ge=60, le=31_536_000)]
MaxRuns = Annotated[StrictInt, Field(ge=1, le=1_000_000)]
JitterSeconds = Annotated[StrictInt, Field(ge=0, le=3600)]
OverlapPolicy = Literal["allow", "skip"]
# Why a trigger is finished: its last occurrence is over (a one-time run, or the last before endAt),
# or it has started maxRuns scheduled runs.
FinishedReason = Literal["ended", "maxRunsReached"]
InvocationStatus = Literal["pending", "running", "completed", "failed", "cancelled", "skipped"]
InvocationKind = Literal["scheduled", "manual", "rerun"]


@dataclass(frozen=True)
class AgentPath:
    """The tenant/project/agent a request addresses."""

    tenant_id: str
    project_id: str
    agent_id: str


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class TriggerCreate(ApiModel):
    id: TriggerId | None = None
    name: Name
    description: Description | None = None
    enabled: StrictBool = True
    cron_expression: CronText | None = None
    cron_timezone: ZoneName = "UTC"
    run_at: Instant | None = None
    interval_seconds: IntervalSeconds | None = None
    start_at: Instant | None = None
    end_at: Instant | None = None
    max_runs: MaxRuns | None = None
    jitter_seconds: JitterSeconds = 0
    payload: Payload | None = None
    message_template: MessageTemplate | None = None
    max_retries: MaxRetries = 1
    retry_delay_seconds: RetryDelay = 60
    timeout_seconds: TimeoutSeconds = 780
    run_as_user_id: RunAsUser | None = None
    ref: Ref = "main"
    catch_up_window_seconds: CatchUpWindow = 3600
    overlap_policy: OverlapPolicy = "allow"
    pause_on_failure: StrictBool = False


class TriggerPatch(ApiModel):
    """Every field optional; only the fields present in the body change (`model_fields_set`)."""

    name: Name | None = None
    description: Description | None = None
    enabled: StrictBool | None = None
    cron_expression: CronText | None = None
    cron_timezone: ZoneName | None = None
    run_at: Instant | None = None
    interval_seconds: IntervalSeconds | None = None
    start_at: Instant | None = None
    end_at: Instant | None = None
    max_runs: MaxRuns | None = None
    jitter_seconds: JitterSeconds | None = None
    payload: Payload | None = None
    message_template: MessageTemplate | None = None
    max_retries: MaxRetries | None = None
    retry_delay_seconds: RetryDelay | None = None
    timeout_seconds: TimeoutSeconds | None = None
    run_as_user_id: RunAsUser | None = None
    ref: Ref | None = None
    catch_up_window_seconds: CatchUpWindow | None = None
    overlap_policy: OverlapPolicy | None = None
    pause_on_failure: StrictBool | None = None


NON_NULLABLE_PATCH_FIELDS = frozenset(
    {
        "name",
        "enabled",
        "cron_timezone",
        "max_retries",
        "retry_delay_seconds",
        "timeout_seconds",
        "ref",
        "catch_up_window_seconds",
        "overlap_policy",
        "pause_on_failure",
        "jitter_seconds",
    }
)


class Trigger(ApiModel):
    id: str
    tenant_id: str
    project_id: str
    agent_id: str
    name: str
    description: str | None
    enabled: bool
    cron_expression: str | None
    cron_timezone: str
    run_at: datetime | None
    interval_seconds: int | None
    start_at: datetime | None
    end_at: datetime | None
    max_runs: int | None
    # maxRuns less the scheduled runs started so far; null without maxRuns.
    runs_remaining: int | None
    jitter_seconds: int
    payload: dict[str, Any] | None
    message_template: str | None
    max_retries: int
    retry_delay_seconds: int
    timeout_seconds: int
    run_as_user_id: str | None
    ref: str
    catch_up_window_seconds: int
    overlap_policy: OverlapPolicy
    pause_on_failure: bool
    # Why the trigger was disabled by a failed scheduled run (pauseOnFailure); cleared by enabling it.
    paused_reason: str | None
    # Set when the schedule is over (the trigger is then disabled); cleared by enabling it.
    finished_reason: FinishedReason | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_run_status: InvocationStatus | None
    last_run_conversation_ids: list[str]
    # The latest run that ended completed or failed; lastRun* also count skipped and cancelled ones.
    last_outcome_at: datetime | None
    last_outcome_status: Literal["completed", "failed"] | None
    missed_runs_skipped: int
    schedule_description: str


class TriggerDetail(Trigger):
    upcoming_runs: list[datetime]


class TriggerPage(ApiModel):
    data: list[Trigger]
    next_cursor: str | None


class Attempt(ApiModel):
    number: int
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    http_status: int | None
    error: str | None
    conversation_id: str | None
    # True for an attempt that came back after its invocation was cancelled (SPEC §5): it is kept as it
    # happened and never changes the invocation's status.
    after_cancel: bool = False


class Invocation(ApiModel):
    id: str
    trigger_id: str
    tenant_id: str
    project_id: str
    agent_id: str
    kind: InvocationKind
    status: InvocationStatus
    scheduled_for: datetime
    # When the run was to start: scheduledFor plus the trigger's jitter (scheduled runs), else scheduledFor.
    starts_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    attempt_number: int
    attempts: list[Attempt]
    conversation_ids: list[str]
    ref: str
    idempotency_key: str
    execution_arn: str | None
    error: str | None
    # A rerun's original invocation (the rerun's own scheduledFor is when it was requested).
    rerun_of: str | None


class InvocationPage(ApiModel):
    data: list[Invocation]
    next_cursor: str | None


class UpcomingRun(ApiModel):
    trigger_id: str
    trigger_name: str
    scheduled_for: datetime
    # When it starts: scheduledFor plus the trigger's jitter.
    starts_at: datetime


class UpcomingRuns(ApiModel):
    data: list[UpcomingRun]


class RunAccepted(ApiModel):
    invocation_id: str
    execution_arn: str


class SchedulePreviewRequest(ApiModel):
    cron_expression: CronText | None = None
    run_at: Instant | None = None
    interval_seconds: IntervalSeconds | None = None
    start_at: Instant | None = None
    end_at: Instant | None = None
    max_runs: MaxRuns | None = None
    jitter_seconds: JitterSeconds = 0
    cron_timezone: ZoneName = "UTC"
    after: Instant | None = None
    count: Annotated[StrictInt, Field(ge=1, le=100)] = 10


class SchedulePreview(ApiModel):
    next_runs: list[datetime]
    schedule_description: str


class ErrorDetail(BaseModel):
    """One problem: `field` is where it is (`body.cronExpression`, `query.limit`, `path.trigger_id`, `cursor`)."""

    field: str
    message: str


class ErrorBody(BaseModel):
    code: str = Field(
        description="Stable machine-readable name: bad_request, unauthorized, forbidden, not_found, conflict, "
        "payload_too_large, unsupported_media_type, validation_failed, internal_error"
    )
    message: str = Field(description="What is wrong, in words; names the field when one is at fault")
    details: list[ErrorDetail] = Field(description="One entry per bad field; may be empty")


class ErrorResponse(BaseModel):
    """Every 4xx/5xx response body."""

    error: ErrorBody

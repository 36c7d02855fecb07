"""API request and response models (camelCase on the wire), validated by pydantic.

Field rules are SPEC §2's. Cross-field rules that need the stored trigger or the clock (exactly
one of cronExpression/runAt/intervalSeconds, runAt not in the past, bounds in order) live in
`sundial.services.triggers`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin

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
OverlapPolicy = Literal["allow", "skip", "buffer_one", "cancel_other"]
# Why a trigger is finished: its last occurrence is over (a one-time run, or the last before endAt),
# or it has started maxRuns scheduled runs.
FinishedReason = Literal["ended", "maxRunsReached"]
InvocationStatus = Literal["pending", "running", "completed", "failed", "cancelled", "skipped"]
InvocationKind = Literal["scheduled", "manual", "rerun", "backfill"]


@dataclass(frozen=True)
class AgentPath:
    """The tenant/project/agent a request addresses."""

    tenant_id: str
    project_id: str
    agent_id: str


@dataclass(frozen=True)
class FieldDoc:
    """What a field means, and one valid value of it as it is on the wire.

    A field whose values are API models (or lists of them) needs no example: theirs is built from
    their fields' examples.
    """

    description: str
    example: Any = None


# What each field means, in every model that has it unless the model overrides it (SPEC §2, §4, §5;
# docs/decisions.md). A model's default for the field is added to the description where it has one.
FIELD_DOCS: dict[str, FieldDoc] = {
    "id": FieldDoc("The trigger's id, unique in its tenant", "daily-report"),
    "tenant_id": FieldDoc("Tenant of the trigger", "acme"),
    "project_id": FieldDoc("Project of the trigger", "website"),
    "agent_id": FieldDoc("Agent the trigger runs", "writer"),
    "name": FieldDoc("Display name, 1-256 characters, trimmed", "Daily report"),
    "description": FieldDoc("Free text, at most 2,048 characters", "Summarises yesterday's support tickets"),
    "enabled": FieldDoc(
        "Whether the schedule runs. A paused or finished trigger is disabled; enabling it resumes it "
        "and clears pausedReason and finishedReason",
        True,
    ),
    "cron_expression": FieldDoc(
        "Cron schedule: 5 fields (minute hour day-of-month month day-of-week) read in cronTimezone, with "
        "JAN-DEC, SUN-SAT (0 and 7 are Sunday) and @hourly, @daily, @midnight, @weekly, @monthly, @yearly, "
        "@annually. Exactly one of cronExpression, runAt and intervalSeconds",
        "0 9 * * MON-FRI",
    ),
    "cron_timezone": FieldDoc(
        "IANA time zone cronExpression is read in, across DST changes as Debian cron does; for runAt and "
        "intervalSeconds it only labels the runs (the agent gets it as `timezone`)",
        "Europe/Berlin",
    ),
    "run_at": FieldDoc(
        "One-time schedule: the instant it runs, ISO-8601 with Z or an offset, kept in UTC to the second, "
        "no more than 60 s in the past when set. Exactly one of cronExpression, runAt and intervalSeconds",
        "2027-01-15T09:00:00Z",
    ),
    "interval_seconds": FieldDoc(
        "Interval schedule: seconds between occurrences (60-31,536,000), at startAt + k * intervalSeconds in "
        "absolute time. Exactly one of cronExpression, runAt and intervalSeconds",
        3600,
    ),
    "start_at": FieldDoc(
        "Recurring schedules only: no occurrence before it. An interval's anchor; without one, the instant "
        "of the request that set the interval, rounded up to the minute",
        "2026-12-01T00:00:00Z",
    ),
    "end_at": FieldDoc(
        "Recurring schedules only: no occurrence after it (one exactly at endAt runs); after startAt",
        "2027-12-31T23:59:59Z",
    ),
    "max_runs": FieldDoc(
        "Recurring schedules only: the trigger finishes once this many scheduled runs have started "
        "(skipped, cancelled and missed occurrences, run-now and reruns do not count), 1-1,000,000",
        200,
    ),
    "jitter_seconds": FieldDoc(
        "Spreads starts: each occurrence starts a fixed pseudo-random 0 to jitterSeconds - 1 seconds after its "
        "instant, never past the next occurrence or endAt; 0-3600",
        300,
    ),
    "payload": FieldDoc(
        "JSON object sent to the agent as `payload`, and the values of messageTemplate's placeholders; at most "
        "32 KiB serialised, 32 levels deep",
        {"team": "support", "channel": "#support-daily"},
    ),
    "message_template": FieldDoc(
        "The agent's `message`, `{{dot.path}}` placeholders filled from payload and the built-ins "
        "`{{scheduledFor}}`, `{{triggerName}}` and `{{invocationId}}`; without one the message is the payload "
        "as JSON. At most 16,384 characters",
        "Summarise yesterday's tickets for {{team}} and post them to {{channel}}",
    ),
    "max_retries": FieldDoc(
        "Retries of a run after an attempt that timed out, hit a network error or got HTTP 408, 425, 429 or "
        "5xx (other failures are not retried), 0-10",
        3,
    ),
    "retry_delay_seconds": FieldDoc(
        "Seconds before the first retry, 10-3600; retry n waits retryDelaySeconds * 2^(n-1), plus up to 30%, "
        "at most 6 hours",
        120,
    ),
    "timeout_seconds": FieldDoc(
        "Wall-clock limit in seconds of one attempt's agent call, body included, 30-780; a timed-out attempt "
        "is retried",
        600,
    ),
    "run_as_user_id": FieldDoc(
        "User the agent runs as, 1-256 characters; a non-admin may name only themself, and `system` and "
        "`apikey:…` are refused. Besides admins and its creator, this user may change and run the trigger",
        "alice",
    ),
    "ref": FieldDoc("Branch the agent runs from: 1-256 characters, no whitespace or control characters", "main"),
    "catch_up_window_seconds": FieldDoc(
        "Of occurrences missed (the dispatcher was down), only the latest runs, and only if it is at most this "
        "many seconds late; the others are skipped and counted in missedRunsSkipped. 0-604,800; an occurrence "
        "at most 60 s late always runs",
        900,
    ),
    "overlap_policy": FieldDoc(
        "A scheduled or backfilled occurrence that starts while another invocation of the trigger is unfinished "
        "(of any kind): `allow` runs it; `skip` records it as skipped; `buffer_one` makes it wait until the other "
        "ends, then run (one waits at most; a further one is skipped); `cancel_other` cancels the other, then runs",
        "skip",
    ),
    "pause_on_failure": FieldDoc(
        "Disable the trigger, with pausedReason, when a scheduled run ends failed after its retries "
        "(run-now and reruns do not pause it)",
        True,
    ),
    "runs_remaining": FieldDoc("maxRuns less the scheduled runs started so far; null without maxRuns", 187),
    "paused_reason": FieldDoc(
        "Why pauseOnFailure disabled the trigger: the failed run, its occurrence and its error; cleared by enabling it",
        "scheduled run 20261201T080000Z-5d41402abc4b2a76b971 for 2026-12-01T08:00:00Z failed: "
        "HTTP 503: upstream unavailable",
    ),
    "finished_reason": FieldDoc(
        "Why the schedule is over and the trigger disabled: `ended` (its last occurrence, a one-time run or "
        "the last before endAt, is over) or `maxRunsReached`; cleared by enabling it",
        "maxRunsReached",
    ),
    "created_by": FieldDoc("`sub` claim of the caller who created the trigger", "alice"),
    "created_at": FieldDoc("When the trigger was created", "2026-11-26T15:00:00Z"),
    "updated_at": FieldDoc("When the trigger was last changed", "2026-11-30T10:12:45Z"),
    "next_run_at": FieldDoc(
        "When the next occurrence that has not run yet starts (jitter included), one already claimed and "
        "waiting included; null when disabled or finished",
        "2026-12-02T08:03:17Z",
    ),
    "last_run_at": FieldDoc(
        "scheduledFor of the latest invocation that ended completed, failed or skipped (cancelled ones do "
        "not show); null before any",
        "2026-12-01T08:00:00Z",
    ),
    "last_run_status": FieldDoc("Status of that invocation: completed, failed or skipped", "completed"),
    "last_run_conversation_ids": FieldDoc("Conversation ids the agent returned in that invocation", ["conv_7Hq2mX"]),
    "last_outcome_at": FieldDoc(
        "scheduledFor of the latest invocation that ended completed or failed, which a later skip does not "
        "hide; null before any",
        "2026-12-01T08:00:00Z",
    ),
    "last_outcome_status": FieldDoc("Status of that invocation: completed or failed", "completed"),
    "missed_runs_skipped": FieldDoc(
        "Occurrences skipped because they were missed beyond catchUpWindowSeconds, since the trigger was created",
        2,
    ),
    "schedule_description": FieldDoc(
        "The schedule in words: its zone, bounds, maxRuns and jitter included",
        "At 09:00, Monday through Friday (Europe/Berlin), from 2026-12-01 00:00 UTC, until 2027-12-31 23:59:59 "
        "UTC, at most 200 runs, with up to 5 minutes of jitter",
    ),
    "upcoming_runs": FieldDoc(
        "When the next five occurrences start (jitter included), soonest first, within runsRemaining; empty "
        "when disabled",
        [
            "2026-12-02T08:03:17Z",
            "2026-12-03T08:01:52Z",
            "2026-12-04T08:04:09Z",
            "2026-12-07T08:00:33Z",
            "2026-12-08T08:02:58Z",
        ],
    ),
    "next_cursor": FieldDoc(
        "Pass as `cursor` to get the next page; null on the last page",
        "eyJhZ2VudF90cmlnZ2VyIjoid3JpdGVyI2RhaWx5LXJlcG9ydCIsInBrIjoiYWNtZSNkYWlseS1yZXBvcnQiLCJwcm9qZWN0X2tleSI6"
        "ImFjbWUjd2Vic2l0ZSJ9",
    ),
    "number": FieldDoc("1 for the first attempt, 2 for the first retry, and so on", 1),
    "ended_at": FieldDoc("When the agent call ended", "2026-12-01T08:03:55Z"),
    "outcome": FieldDoc(
        "`succeeded` (HTTP 2xx), `rejected` (any other status, or a 2xx body over 64 KiB; not retried), "
        "`timeout` or `retryable_error` (a network error or HTTP 408, 425, 429 or 5xx; both retried while "
        "maxRetries allows)",
        "retryable_error",
    ),
    "http_status": FieldDoc("The agent's HTTP status; null when no answer came (network error, timeout)", 503),
    "conversation_id": FieldDoc("`conversationId` of the agent's 2xx answer, when it sent one", "conv_7Hq2mX"),
    "after_cancel": FieldDoc(
        "True for an attempt that ended after its invocation was cancelled: kept as it happened, it never "
        "changes the invocation's status",
        False,
    ),
    "trigger_id": FieldDoc("Id of the trigger", "daily-report"),
    "kind": FieldDoc(
        "`scheduled` (an occurrence of the schedule), `manual` (run now), `rerun` or `backfill` (a past "
        "occurrence run by a backfill request)",
        "scheduled",
    ),
    "status": FieldDoc(
        "`pending`, then `running`, then `completed` or `failed`; or `cancelled` (by a user, by deleting the "
        "trigger, superseded by an edit, or by overlapPolicy `cancel_other`) or `skipped` (missed, or by overlapPolicy "
        "`skip` or `buffer_one`)",
        "completed",
    ),
    "scheduled_for": FieldDoc(
        "The occurrence's instant before jitter; for run-now and reruns, when the run was requested",
        "2026-12-01T08:00:00Z",
    ),
    "starts_at": FieldDoc(
        "When the run was to start: scheduledFor plus the trigger's jitter for a scheduled run, else scheduledFor",
        "2026-12-01T08:02:41Z",
    ),
    "started_at": FieldDoc("When the invocation became running; null if it never did", "2026-12-01T08:02:41Z"),
    "completed_at": FieldDoc("When the invocation reached its final status; null until then", "2026-12-01T08:03:55Z"),
    "attempt_number": FieldDoc("Agent calls made so far (0 before the first)", 1),
    "attempts": FieldDoc("Every agent call, in order"),
    "conversation_ids": FieldDoc("Conversation ids the agent returned, in order, without repeats", ["conv_7Hq2mX"]),
    "idempotency_key": FieldDoc(
        "Unique key of the run: for a scheduled occurrence its Step Functions execution name "
        "(`s-<hash>-v<schedule version>-<instant>`), else `manual:…` or `rerun:…`",
        "s-9b2e61f0c4d7a853-v3-20261201T080000Z",
    ),
    "execution_arn": FieldDoc(
        "The Step Functions execution that runs it",
        "arn:aws:states:eu-central-1:123456789012:execution:SundialRunner:s-9b2e61f0c4d7a853-v3-20261201T080000Z",
    ),
    "error": FieldDoc(
        "Why the invocation failed, was cancelled or was skipped; null otherwise",
        "HTTP 503: upstream unavailable",
    ),
    "rerun_of": FieldDoc(
        "The invocation a rerun re-runs; null for other kinds", "20261130T080000Z-8f14e45fceea167a5a36"
    ),
    "trigger_name": FieldDoc("The trigger's name", "Daily report"),
    "invocation_id": FieldDoc(
        "Id of the invocation the run recorded; a repeat with the same Idempotency-Key gets the first one's",
        "20261202T130500Z-3c59dc048e8850243be8",
    ),
    "after": FieldDoc("Occurrences strictly after this instant are shown; now when omitted", "2026-12-01T00:00:00Z"),
    "count": FieldDoc("How many occurrences to show, 1-100 (fewer when maxRuns or the schedule ends first)", 5),
    "next_runs": FieldDoc(
        "The next occurrences after `after`, soonest first, before jitter",
        ["2026-12-01T08:00:00Z", "2026-12-02T08:00:00Z", "2026-12-03T08:00:00Z", "2026-12-04T08:00:00Z"],
    ),
    "field": FieldDoc(
        "Where the problem is: `body.<field>`, `query.<name>`, `path.<name>`, `header.<name>`, `body` or `cursor`",
        "body.cronExpression",
    ),
    "message": FieldDoc(
        "What is wrong, in words; names the field when one is at fault",
        "Invalid request: body.cronExpression: expected 5 fields (minute hour day-of-month month day-of-week), got 4",
    ),
    "code": FieldDoc(
        "Stable machine-readable name: bad_request, unauthorized, forbidden, not_found, conflict, "
        "payload_too_large, unsupported_media_type, validation_failed, unavailable, internal_error",
        "validation_failed",
    ),
    "details": FieldDoc("One entry per bad field; may be empty"),
}


def _document(schema: dict[str, Any], model: type[ApiModel]) -> None:
    """Fill each property of `model`'s JSON schema with its description and example, and give the
    schema a whole example when the model names the fields one is made of."""
    for name, field in model.model_fields.items():
        prop = schema["properties"][field.alias or name]
        default = "" if field.is_required() or field.default is None else f"; default {json.dumps(field.default)}"
        prop["description"] = _doc(model, name).description + default
        prop["examples"] = [_example(model, name)]
    if model.example_fields:
        schema["examples"] = [_example_of(model, model.example_fields)]


def _doc(model: type[ApiModel], name: str) -> FieldDoc:
    """The model's own doc of the field where its meaning there differs, else the shared one."""
    return model.field_docs.get(name) or FIELD_DOCS[name]


def _example(model: type[ApiModel], name: str) -> Any:
    """The field's example; one of API models is built from theirs, so it always matches them."""
    annotation = model.model_fields[name].annotation
    listed = get_origin(annotation) is list
    item = get_args(annotation)[0] if listed else annotation
    if isinstance(item, type) and issubclass(item, ApiModel):
        nested = _example_of(item, tuple(item.model_fields))
        return [nested] if listed else nested
    return _doc(model, name).example


def _example_of(model: type[ApiModel], names: tuple[str, ...]) -> dict[str, Any]:
    return {model.model_fields[name].alias or name: _example(model, name) for name in names}


class ApiModel(BaseModel):
    """camelCase on the wire, snake_case in Python; every field documented (FIELD_DOCS) in the OpenAPI document."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", json_schema_extra=_document
    )
    # Docs of the fields that mean something else in this model than in FIELD_DOCS.
    field_docs: ClassVar[dict[str, FieldDoc]] = {}
    # The fields of the schema's own example (a request that works as it is); none: no such example.
    example_fields: ClassVar[tuple[str, ...]] = ()


class TriggerCreate(ApiModel):
    """A new trigger; exactly one of cronExpression, runAt and intervalSeconds sets its schedule."""

    field_docs: ClassVar[dict[str, FieldDoc]] = {
        "id": FieldDoc(
            "Trigger id, unique in the tenant: 1-64 characters of A-Z, a-z, 0-9, _ and -, not `upcoming-runs`; "
            "generated (`trg_` and 20 hex digits) when omitted",
            "daily-report",
        ),
    }
    example_fields: ClassVar[tuple[str, ...]] = (
        "id",
        "name",
        "description",
        "cron_expression",
        "cron_timezone",
        "payload",
        "message_template",
        "max_retries",
        "timeout_seconds",
        "ref",
    )

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
    """Only the fields present change; `null` clears one a trigger may have as null (the others refuse it)."""

    example_fields: ClassVar[tuple[str, ...]] = ("enabled", "cron_expression", "cron_timezone")

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
    paused_reason: str | None
    finished_reason: FinishedReason | None
    created_by: str
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_run_status: InvocationStatus | None
    last_run_conversation_ids: list[str]
    last_outcome_at: datetime | None
    last_outcome_status: Literal["completed", "failed"] | None
    missed_runs_skipped: int
    schedule_description: str


class TriggerDetail(Trigger):
    upcoming_runs: list[datetime]


class TriggerPage(ApiModel):
    field_docs: ClassVar[dict[str, FieldDoc]] = {"data": FieldDoc("This page's triggers, by agent then id")}

    data: list[Trigger]
    next_cursor: str | None


class Attempt(ApiModel):
    field_docs: ClassVar[dict[str, FieldDoc]] = {
        "started_at": FieldDoc("When the agent call started", "2026-12-01T08:02:41Z"),
        "error": FieldDoc(
            "What went wrong, a short excerpt with credentials redacted; null when it succeeded",
            "HTTP 503: upstream unavailable",
        ),
    }

    number: int
    started_at: datetime
    ended_at: datetime | None
    outcome: str
    http_status: int | None
    error: str | None
    conversation_id: str | None
    after_cancel: bool = False


class Invocation(ApiModel):
    field_docs: ClassVar[dict[str, FieldDoc]] = {
        "id": FieldDoc(
            "Invocation id: scheduledFor in compact form, then a hash, so ids sort by time",
            "20261201T080000Z-5d41402abc4b2a76b971",
        ),
        "ref": FieldDoc("Branch the run used: the trigger's ref when it started", "main"),
    }

    id: str
    trigger_id: str
    tenant_id: str
    project_id: str
    agent_id: str
    kind: InvocationKind
    status: InvocationStatus
    scheduled_for: datetime
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
    rerun_of: str | None


class InvocationPage(ApiModel):
    field_docs: ClassVar[dict[str, FieldDoc]] = {
        "data": FieldDoc("This page's invocations, newest first; it may hold fewer than limit before the last page")
    }

    data: list[Invocation]
    next_cursor: str | None


class UpcomingRun(ApiModel):
    field_docs: ClassVar[dict[str, FieldDoc]] = {
        "scheduled_for": FieldDoc("The occurrence's instant before jitter", "2026-12-02T08:00:00Z"),
        "starts_at": FieldDoc("When it starts: scheduledFor plus the trigger's jitter", "2026-12-02T08:03:17Z"),
    }

    trigger_id: str
    trigger_name: str
    scheduled_for: datetime
    starts_at: datetime


class UpcomingRuns(ApiModel):
    field_docs: ClassVar[dict[str, FieldDoc]] = {
        "data": FieldDoc("The next occurrences of the agent's enabled triggers, soonest first, at most limit")
    }

    data: list[UpcomingRun]


class RunAccepted(ApiModel):
    invocation_id: str
    execution_arn: str


# The most occurrences one backfill request may run (SPEC §3).
MAX_BACKFILL_OCCURRENCES = 1000


class BackfillRequest(ApiModel):
    """A past range of the trigger's schedule to run: every occurrence T with from <= T < to."""

    field_docs: ClassVar[dict[str, FieldDoc]] = {
        "from_": FieldDoc("Start of the range (inclusive), ISO-8601 with Z or an offset", "2026-11-30T00:00:00Z"),
        "to": FieldDoc(
            "End of the range (exclusive), not in the future; the range may hold at most "
            f"{MAX_BACKFILL_OCCURRENCES:,} occurrences of the schedule",
            "2026-12-01T00:00:00Z",
        ),
    }
    example_fields: ClassVar[tuple[str, ...]] = ("from_", "to")

    from_: Instant = Field(alias="from")
    to: Instant


class BackfillAccepted(ApiModel):
    field_docs: ClassVar[dict[str, FieldDoc]] = {
        "invocation_ids": FieldDoc(
            "One `backfill` invocation per occurrence in the range, oldest first; posting the same range again "
            "answers the same ids",
            ["20261130T090000Z-0c2f3d1e9a8b7c6d5e4f"],
        ),
        "started": FieldDoc(
            "How many of them this request started; the others had been started by an earlier request", 1
        ),
    }

    invocation_ids: list[str]
    started: int


class SchedulePreviewRequest(ApiModel):
    """A schedule as a trigger would have it; exactly one of cronExpression, runAt and intervalSeconds."""

    field_docs: ClassVar[dict[str, FieldDoc]] = {
        "run_at": FieldDoc(
            "One-time schedule: its instant, ISO-8601 with Z or an offset; one before `after` has no runs. "
            "Exactly one of cronExpression, runAt and intervalSeconds",
            "2027-01-15T09:00:00Z",
        ),
        "max_runs": FieldDoc("Recurring schedules only: show at most this many runs, 1-1,000,000", 200),
        "jitter_seconds": FieldDoc(
            "A trigger's jitterSeconds, 0-3600: named in scheduleDescription, not added to nextRuns, since each "
            "trigger gets its own offsets",
            300,
        ),
    }
    example_fields: ClassVar[tuple[str, ...]] = ("cron_expression", "cron_timezone", "after", "count")

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


CascadeScopeKind = Literal["project", "agent", "ref", "user"]
CascadeState = Literal["running", "completed"]


class CascadeAccepted(ApiModel):
    field_docs: ClassVar[dict[str, FieldDoc]] = {
        "cascade_id": FieldDoc(
            "Id of the cascade; a repeat with the same Idempotency-Key gets the first one's",
            "csc_5d41402abc4b2a76b9719d91",
        )
    }

    cascade_id: str


class Cascade(ApiModel):
    """A cascade's scope and progress (SPEC §7); the counts only grow until it is completed."""

    field_docs: ClassVar[dict[str, FieldDoc]] = {
        "cascade_id": FieldDoc("Id of the cascade", "csc_5d41402abc4b2a76b9719d91"),
        "tenant_id": FieldDoc("Tenant whose triggers the cascade deletes", "acme"),
        "scope": FieldDoc(
            "What it deletes: every trigger of a project, of an agent in it, of a branch (ref) in it, "
            "or every trigger that runs as a user",
            "ref",
        ),
        "project_id": FieldDoc("The project, for the project, agent and ref scopes; null for user", "website"),
        "agent_id": FieldDoc("The agent, for the agent scope; null otherwise", None),
        "ref": FieldDoc("The branch, for the ref scope; null otherwise", "feature/checkout"),
        "user_id": FieldDoc("The runAs user, for the user scope; null otherwise", None),
        "state": FieldDoc(
            "running until every trigger of the scope is deleted (the last pass comes a minute after the "
            "one before, as the index may lag), then completed",
            "running",
        ),
        "accepted_at": FieldDoc(
            "When it was accepted: no trigger in the scope since before then runs afterwards", "2026-12-02T10:15:00Z"
        ),
        "completed_at": FieldDoc("When it completed; null while running", None),
        "found": FieldDoc("Triggers of the scope found so far", 1200),
        "deleted": FieldDoc("Triggers deleted so far", 1000),
        "invocations_cancelled": FieldDoc("Unfinished invocations of those triggers cancelled so far", 14),
        "executions_stopped": FieldDoc("Step Functions executions of those invocations stopped so far", 12),
    }

    cascade_id: str
    tenant_id: str
    scope: CascadeScopeKind
    project_id: str | None
    agent_id: str | None
    ref: str | None
    user_id: str | None
    state: CascadeState
    accepted_at: datetime
    completed_at: datetime | None
    found: int
    deleted: int
    invocations_cancelled: int
    executions_stopped: int


class ErrorDetail(ApiModel):
    """One problem with the request."""

    field_docs: ClassVar[dict[str, FieldDoc]] = {
        "message": FieldDoc(
            "What is wrong there", "expected 5 fields (minute hour day-of-month month day-of-week), got 4"
        )
    }

    field: str
    message: str


class ErrorBody(ApiModel):
    code: str
    message: str
    details: list[ErrorDetail]


class ErrorResponse(ApiModel):
    """Every 4xx/5xx response body."""

    field_docs: ClassVar[dict[str, FieldDoc]] = {"error": FieldDoc("What went wrong")}

    error: ErrorBody

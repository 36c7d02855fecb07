"""`make migrate`: EventBridge Scheduler schedules (moto) and exported rows into triggers, through the services.

Every expression form is converted exactly or refused with its reason; the plan is checked row by row;
--apply writes it, a second run reports everything unchanged; and the cutover hands each schedule over
at T with nothing run on both sides and nothing lost.
"""

from __future__ import annotations

import io
import itertools
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import boto3
import pytest
from botocore.exceptions import ClientError
from sundial.domain.auth import Principal
from sundial.domain.errors import NotFoundError
from sundial.domain.schedule import stored_schedule
from sundial.services import triggers

from sundial_migrate.__main__ import migrate
from sundial_migrate.aws_schedules import RefusedError, convert_schedule
from sundial_migrate.sources import trigger_id_for
from tests.conftest import REGION, START, Stack

ADMIN = Principal("auditor", "acme", frozenset({"admin"}))
ZONES = ("UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata")
ROLE = "arn:aws:iam::123456789012:role/scheduler"
LAMBDA = "arn:aws:lambda:us-east-1:123456789012:function:old-runner"
MAPPING = {"tenantId": "$.tenant", "projectId": "$.project", "agentId": "$.agent", "payload": "$.payload"}


@dataclass(frozen=True)
class Form:
    expression: str
    cron: str | None = None  # the Sundial cron it becomes
    interval: int | None = None
    years: tuple[int, int] | None = None
    refused: str | None = None  # a phrase of the reason


FORMS = [
    Form("cron(0 9 ? * MON-FRI *)", cron="0 9 * * MON-FRI"),
    Form("cron(0/15 * * * ? *)", cron="0/15 * * * *"),
    Form("cron(30 8 ? * 2-6 *)", cron="30 8 * * MON-FRI"),
    Form("cron(0 18 ? * 1,7 *)", cron="0 18 * * SUN,SAT"),
    Form("cron(0 6 ? * 1/2 *)", cron="0 6 * * SUN,TUE,THU,SAT"),
    Form("cron(0 6 ? * SUN,MON,TUE,WED,THU,FRI,SAT *)", cron="0 6 * * *"),
    Form("cron(0 12 1 * ? *)", cron="0 12 1 * *"),
    Form("cron(15 10 1,15 JAN,JUL ? *)", cron="15 10 1,15 JAN,JUL *"),
    Form("cron(0 0-12/3 * * ? *)", cron="0 0-12/3 * * *"),
    Form("cron(0 12 * * ? 2027)", cron="0 12 * * *", years=(2027, 2027)),
    Form("cron(0 12 ? * MON 2027-2028)", cron="0 12 * * MON", years=(2027, 2028)),
    Form("rate(5 minutes)", interval=300),
    Form("rate(1 hour)", interval=3600),
    Form("rate(2 days)", interval=172_800),
    Form("at(2027-03-01T10:00:00)"),
    Form("cron(0 12 L * ? *)", refused="uses L, W, # or ?"),
    Form("cron(0 12 15W * ? *)", refused="uses L, W, # or ?"),
    Form("cron(0 12 ? * 6#3 *)", refused="uses L or #"),
    Form("cron(0 12 ? * 6L *)", refused="uses L or #"),
    Form("cron(0 12 * * ? 2027,2029)", refused="Sundial has no year field"),
    Form("cron(0 12 * * ? 2027/2)", refused="Sundial has no year field"),
    Form("cron(0 9 1 * MON *)", refused="restricts both day-of-month and day-of-week"),
    Form("rate(30 seconds)", refused="is not 'rate(value"),
    Form("rate(400 days)", refused="outside Sundial's intervals"),
    Form("cron(0 9 * *)", refused="does not have AWS's six fields"),
]


def at_instant(zone: str) -> datetime:
    return datetime(2027, 3, 1, 10, 0, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def scheduler(stack: Stack) -> Any:
    client = boto3.client("scheduler", region_name=REGION)
    client.create_schedule_group(Name="reports")
    return client


def add_schedule(scheduler: Any, name: str, expression: str, zone: str = "UTC", **extra: Any) -> None:
    target = {
        "Arn": LAMBDA,
        "RoleArn": ROLE,
        "Input": json.dumps({"tenant": "acme", "project": "website", "agent": "reporter", "payload": {"n": name}}),
        **extra.pop("target", {}),
    }
    scheduler.create_schedule(
        Name=name,
        GroupName="reports",
        ScheduleExpression=expression,
        ScheduleExpressionTimezone=zone,
        FlexibleTimeWindow=extra.pop("window", {"Mode": "OFF"}),
        Target=target,
        **extra,
    )


def run_cli(stack: Stack, scheduler: Any, *args: str, tmp_path: Path) -> tuple[int, str, str]:
    mapping = tmp_path / "mapping.json"
    mapping.write_text(json.dumps(MAPPING))
    out, err = io.StringIO(), io.StringIO()
    argv = ["eventbridge", "--group", "reports", "--mapping", str(mapping), *args]
    code = migrate(argv, deps=stack.deps, scheduler=scheduler, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def plan_lines(output: str) -> dict[str, list[str]]:
    """The plan's rows by source, split into action, source, trigger and detail."""
    rows: dict[str, list[str]] = {}
    for line in output.splitlines()[1:]:
        parts = line.split(None, 3)
        if len(parts) >= 3 and parts[1].startswith(("eventbridge:", "rows.")):
            rows[parts[1]] = parts
    return rows


def stored(stack: Stack, trigger_id: str, agent: str = "reporter") -> Any:
    return triggers.get_trigger(stack.deps, ADMIN, triggers.AgentPath("acme", "website", agent), trigger_id)


def test_two_hundred_schedules_of_every_form_are_planned_applied_and_then_unchanged(
    stack: Stack, scheduler: Any, tmp_path: Path
) -> None:
    expected: dict[str, tuple[Form, str, dict[str, Any]]] = {}
    for number, (form, zone, variant) in enumerate(itertools.product(FORMS, ZONES, range(2))):
        name = f"s{number:03d}"
        extra: dict[str, Any] = {"State": "DISABLED" if variant else "ENABLED"}
        if number % 3 == 0:
            extra["window"] = {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 5}
        if number % 4 == 0:
            extra["target"] = {"RetryPolicy": {"MaximumRetryAttempts": 185, "MaximumEventAgeInSeconds": 7200}}
        if form.interval:
            extra["StartDate"] = datetime(2026, 11, 1, 0, 7, tzinfo=UTC)
        add_schedule(scheduler, name, form.expression, zone, **dict(extra))
        expected[name] = (form, zone, extra)
    assert len(expected) >= 200

    code, output, _ = run_cli(stack, scheduler, tmp_path=tmp_path)
    assert code == 0
    plan = plan_lines(output)
    assert len(plan) == len(expected)
    for name, (form, _zone, _extra) in expected.items():
        action, *_, detail = plan[f"eventbridge:reports/{name}"]
        if form.refused:
            assert action == "refused", (name, form)
            assert form.refused in detail, (name, detail)
        else:
            assert action == "create", (name, plan[f"eventbridge:reports/{name}"])
    refused = sum(1 for form, _, _ in expected.values() if form.refused)
    assert f"create {len(expected) - refused} · update 0 · unchanged 0 · refused {refused}" in output
    assert "dry run: nothing was written" in output
    with pytest.raises(NotFoundError):
        stored(stack, trigger_id_for("reports", "s000"))

    assert run_cli(stack, scheduler, "--apply", tmp_path=tmp_path)[0] == 0
    for name, (form, zone, extra) in expected.items():
        if form.refused:
            continue
        trigger = stored(stack, trigger_id_for("reports", name))
        assert trigger.enabled is (extra["State"] == "ENABLED")
        assert trigger.payload == {"n": name}
        assert trigger.jitter_seconds == (300 if "window" in extra else 0)
        if "target" in extra:
            assert (trigger.max_retries, trigger.catch_up_window_seconds) == (10, 7200)
        if form.cron:
            assert (trigger.cron_expression, trigger.cron_timezone) == (form.cron, zone)
        if form.years:
            first, last = form.years
            assert trigger.start_at == datetime(first, 1, 1, tzinfo=ZoneInfo(zone)).astimezone(UTC)
            assert trigger.end_at == datetime(last + 1, 1, 1, tzinfo=ZoneInfo(zone)) - timedelta(seconds=1)
        if form.interval:
            assert trigger.interval_seconds == form.interval
            assert trigger.start_at == datetime(2026, 11, 1, 0, 7, tzinfo=UTC), "the rate keeps its phase"
        if form.expression.startswith("at("):
            assert trigger.run_at == at_instant(zone)

    code, again, _ = run_cli(stack, scheduler, tmp_path=tmp_path)
    assert f"create 0 · update 0 · unchanged {len(expected) - refused} · refused {refused}" in again


def test_a_changed_schedule_is_an_update_of_only_what_changed(stack: Stack, scheduler: Any, tmp_path: Path) -> None:
    add_schedule(scheduler, "nightly", "cron(0 2 * * ? *)", "Europe/Berlin")
    run_cli(stack, scheduler, "--apply", tmp_path=tmp_path)
    schedule = scheduler.get_schedule(Name="nightly", GroupName="reports")
    scheduler.update_schedule(
        Name="nightly",
        GroupName="reports",
        ScheduleExpression="cron(30 2 * * ? *)",
        ScheduleExpressionTimezone="Europe/Berlin",
        FlexibleTimeWindow=schedule["FlexibleTimeWindow"],
        Target=schedule["Target"],
    )
    _, output, _ = run_cli(stack, scheduler, "--apply", tmp_path=tmp_path)
    action, _, _, detail = plan_lines(output)["eventbridge:reports/nightly"]
    assert (action, detail) == ("update", "cronExpression")
    assert stored(stack, "reports-nightly").cron_expression == "30 2 * * *"


def test_the_cutover_hands_each_schedule_over_at_t_with_nothing_run_twice_or_lost(
    stack: Stack, scheduler: Any, tmp_path: Path
) -> None:
    cutover = START + timedelta(hours=1, minutes=2, seconds=30)
    add_schedule(scheduler, "every-5", "cron(0/5 * * * ? *)")
    add_schedule(scheduler, "hourly-berlin", "cron(0 * * * ? *)", "Europe/Berlin")
    add_schedule(scheduler, "rate-7", "rate(7 minutes)", StartDate=START - timedelta(minutes=3))
    add_schedule(scheduler, "once-before", f"at({(cutover - timedelta(minutes=10)):%Y-%m-%dT%H:%M:%S})")
    add_schedule(scheduler, "once-after", f"at({(cutover + timedelta(minutes=10)):%Y-%m-%dT%H:%M:%S})")
    add_schedule(scheduler, "unsupported", "cron(0 12 L * ? *)")

    code, output, _ = run_cli(
        stack, scheduler, "--apply", "--cutover-at", iso(cutover), "--disable-source", tmp_path=tmp_path
    )
    assert code == 0, output
    plan = plan_lines(output)
    assert plan["eventbridge:reports/once-before"][0] == "refused"
    assert "stays with EventBridge" in plan["eventbridge:reports/once-before"][3]
    assert plan["eventbridge:reports/unsupported"][0] == "refused"

    for name, expression in (("every-5", "0/5 * * * *"), ("hourly-berlin", "0 * * * *")):
        source = scheduler.get_schedule(Name=name, GroupName="reports")
        assert source["EndDate"] == cutover, "the source fires only before T"
        assert source["State"] == "ENABLED"
        zone = source["ScheduleExpressionTimezone"]
        original = stored_schedule(expression, zone, None, None, None, None)
        first_at_or_after = original.next_after(cutover - timedelta(microseconds=1))
        trigger = stored(stack, f"reports-{name}")
        assert trigger.upcoming_runs[0] == first_at_or_after, "Sundial's first run is the first at or after T"
        assert all(run >= cutover for run in trigger.upcoming_runs)
        last_before = max(itertools.takewhile(lambda run: run < cutover, original.occurrences_after(START)))
        assert last_before < cutover <= trigger.upcoming_runs[0]

    rate = stored(stack, "reports-rate-7")
    anchor = START - timedelta(minutes=3)
    assert rate.upcoming_runs[0] >= cutover
    assert (rate.upcoming_runs[0] - anchor) % timedelta(minutes=7) == timedelta(0), "the same phase"
    assert rate.upcoming_runs[0] - timedelta(minutes=7) < cutover, (
        "no tick between the source's last and Sundial's first"
    )
    assert scheduler.get_schedule(Name="rate-7", GroupName="reports")["EndDate"] == cutover

    once = scheduler.get_schedule(Name="once-after", GroupName="reports")
    assert once["State"] == "DISABLED"
    assert stored(stack, "reports-once-after").run_at == cutover + timedelta(minutes=10)
    untouched = scheduler.get_schedule(Name="once-before", GroupName="reports")
    assert (untouched["State"], untouched.get("EndDate")) == ("ENABLED", None)
    assert scheduler.get_schedule(Name="unsupported", GroupName="reports").get("EndDate") is None


def test_the_hand_over_needs_a_future_cutover_and_apply(stack: Stack, scheduler: Any, tmp_path: Path) -> None:
    code, _, err = run_cli(stack, scheduler, "--disable-source", tmp_path=tmp_path)
    assert code == 2
    assert "--disable-source needs --cutover-at and --apply" in err
    code, _, err = run_cli(
        stack, scheduler, "--apply", "--cutover-at", iso(START - timedelta(minutes=1)), tmp_path=tmp_path
    )
    assert code == 2
    assert "is not in the future" in err


def test_a_target_input_the_mapping_cannot_read_is_refused(stack: Stack, scheduler: Any, tmp_path: Path) -> None:
    add_schedule(scheduler, "no-tenant", "rate(1 hour)", target={"Input": json.dumps({"project": "p"})})
    add_schedule(scheduler, "not-json", "rate(1 hour)", target={"Input": "not json"})
    _, output, _ = run_cli(stack, scheduler, tmp_path=tmp_path)
    plan = plan_lines(output)
    assert plan["eventbridge:reports/no-tenant"][3] == "the target input has no $.tenant"
    assert plan["eventbridge:reports/not-json"][3] == "the target's Input is not JSON"


@pytest.mark.parametrize(
    ("schedule", "fields"),
    [
        (
            {"ScheduleExpression": "cron(0 9 ? * MON-FRI *)", "ScheduleExpressionTimezone": "Europe/Berlin"},
            {"cronExpression": "0 9 * * MON-FRI", "cronTimezone": "Europe/Berlin", "enabled": True},
        ),
        (
            {"ScheduleExpression": "at(2027-03-01T10:00:00)", "ScheduleExpressionTimezone": "America/New_York"},
            {"runAt": "2027-03-01T15:00:00Z", "enabled": True},
        ),
        (
            {
                "ScheduleExpression": "cron(0 9 * * ? *)",
                "EndDate": datetime(2027, 1, 1, tzinfo=UTC),
                "State": "DISABLED",
            },
            {"cronExpression": "0 9 * * *", "cronTimezone": "UTC", "endAt": "2026-12-31T23:59:59Z", "enabled": False},
        ),
    ],
)
def test_conversion_of_one_schedule(schedule: dict[str, Any], fields: dict[str, Any]) -> None:
    assert convert_schedule(schedule).fields == fields


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ({"ScheduleExpression": "cron(0 9 * * ? *)", "ScheduleExpressionTimezone": "Mars/Olympus"}, "time zone"),
        ({"ScheduleExpression": "every day"}, "is not a cron(), rate() or at() expression"),
        (
            {
                "ScheduleExpression": "cron(0 9 * * ? *)",
                "FlexibleTimeWindow": {"Mode": "FLEXIBLE", "MaximumWindowInMinutes": 90},
            },
            "over Sundial's 60 minutes of jitter",
        ),
        ({"ScheduleExpression": "rate(1 hour)"}, "neither a StartDate nor a CreationDate"),
        ({"ScheduleExpression": "cron(0 9 ? * FRI-MON *)"}, "runs backwards"),
    ],
)
def test_what_sundial_cannot_say_is_refused_with_the_reason(schedule: dict[str, Any], reason: str) -> None:
    with pytest.raises(RefusedError, match=re.escape(reason)):
        convert_schedule(schedule)


def test_lossy_schedule_names_become_distinct_valid_ids() -> None:
    first, second = trigger_id_for("g", "daily report"), trigger_id_for("g", "daily/report")
    assert first != second
    assert len(trigger_id_for("g", "x" * 100)) <= 64
    assert trigger_id_for("reports", "nightly") == "reports-nightly"


def export_row(number: int, **changes: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "tenantId": "acme",
        "projectId": "website",
        "agentId": "exporter",
        "id": f"row-{number:03d}",
        "name": f"Row {number}",
        "description": None,
        "enabled": number % 5 != 0,
        "cronExpression": ["0 9 * * MON-FRI", "*/30 * * * *", "0 0 1 * *"][number % 3],
        "cronTimezone": ZONES[number % 4],
        "runAt": None,
        "payload": {"n": number},
        "messageTemplate": "Row {{n}}",
        "maxRetries": number % 4,
        "retryDelaySeconds": 60,
        "timeoutSeconds": 600,
        "runAsUserId": "alice" if number % 2 else None,
        "ref": "main" if number % 7 else "release",
        "lastRunAt": "2026-11-01T09:00:00Z",
    }
    row.update(changes)
    return row


BAD_ROWS = [
    (export_row(900, cronExpression="61 * * * *"), "cronExpression"),
    (export_row(901, cronTimezone="Mars/Olympus"), "cronTimezone"),
    (export_row(902, maxRetries=99), "maxRetries"),
    (export_row(903, cronExpression=None), "Exactly one of cronExpression"),
    (export_row(904, cronExpression=None, runAt="2026-01-01T00:00:00Z"), "runAt"),
    (export_row(905, name=""), "name"),
    ({"projectId": "website", "agentId": "a", "id": "x"}, "missing tenantId"),
    (export_row(906, runAsUserId="system"), "runAsUserId"),
    (export_row(1, name="A duplicate of row 1"), "also imported from"),
]


def test_two_hundred_exported_rows_with_bad_ones_are_planned_applied_and_then_unchanged(
    stack: Stack, tmp_path: Path
) -> None:
    good = [export_row(number) for number in range(200)]
    lines = [json.dumps(row) for row in good] + [json.dumps(row) for row, _ in BAD_ROWS] + ["{not json"]
    export = tmp_path / "rows.ndjson"
    export.write_text("\n".join(lines) + "\n")

    def cli(*args: str) -> str:
        out, err = io.StringIO(), io.StringIO()
        assert migrate(["export", str(export), *args], deps=stack.deps, out=out, err=err) == 0
        assert "… 200 rows" in err.getvalue(), "progress is reported"
        return out.getvalue()

    dry = cli()
    plan = plan_lines(dry)
    assert [plan[f"rows.ndjson:{n}"][0] for n in range(1, 201)] == ["create"] * 200
    for offset, (_, reason) in enumerate(BAD_ROWS, start=201):
        action, _, _, detail = plan[f"rows.ndjson:{offset}"]
        assert (action, reason in detail) == ("refused", True), (offset, detail)
    assert "not JSON" in plan[f"rows.ndjson:{201 + len(BAD_ROWS)}"][3]
    assert "ignored lastRunAt" in plan["rows.ndjson:1"][3]
    assert f"create 200 · update 0 · unchanged 0 · refused {len(BAD_ROWS) + 1}" in dry

    cli("--apply")
    trigger = stored(stack, "row-007", agent="exporter")
    assert (trigger.cron_expression, trigger.cron_timezone, trigger.ref) == ("*/30 * * * *", ZONES[3], "release")
    assert trigger.run_as_user_id == "alice"
    assert trigger.created_by == "sundial-migration"
    with pytest.raises(NotFoundError):
        stored(stack, "row-900", agent="exporter")
    assert f"create 0 · update 0 · unchanged 200 · refused {len(BAD_ROWS) + 1}" in cli()


def test_an_export_is_read_as_a_json_array_too_and_a_cutover_starts_recurring_rows_at_t(
    stack: Stack, tmp_path: Path
) -> None:
    cutover = START + timedelta(days=1)
    rows = [
        export_row(1),
        export_row(2, cronExpression=None, runAt=iso(cutover - timedelta(hours=1))),
        export_row(3, cronExpression=None, runAt=iso(cutover + timedelta(hours=1))),
    ]
    export = tmp_path / "rows.json"
    export.write_text(json.dumps(rows))
    out = io.StringIO()
    argv = ["export", str(export), "--apply", "--cutover-at", iso(cutover)]
    assert migrate(argv, deps=stack.deps, out=out, err=io.StringIO()) == 0
    plan = plan_lines(out.getvalue())
    assert plan["rows.json[2]"][0] == "refused"
    assert stored(stack, "row-001", agent="exporter").upcoming_runs[0] >= cutover
    assert stored(stack, "row-003", agent="exporter").run_at == cutover + timedelta(hours=1)


def test_help_describes_the_command(capsys: pytest.CaptureFixture[str], stack: Stack) -> None:
    with pytest.raises(SystemExit) as exited:
        migrate(["--help"], deps=stack.deps)
    assert exited.value.code == 0
    assert "Prints the plan" in capsys.readouterr().out


def test_a_hand_over_that_fails_is_reported_and_the_command_fails(stack: Stack, scheduler: Any, tmp_path: Path) -> None:
    add_schedule(scheduler, "hourly", "cron(0 * * * ? *)")

    class Refusing:
        """The scheduler, except that UpdateSchedule is refused (say, the role may not change schedules)."""

        def __getattr__(self, name: str) -> Any:
            return getattr(scheduler, name)

        def update_schedule(self, **_: Any) -> None:
            raise ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "UpdateSchedule")

    cutover = iso(START + timedelta(hours=1))
    code, output, err = run_cli(
        stack, Refusing(), "--apply", "--cutover-at", cutover, "--disable-source", tmp_path=tmp_path
    )
    assert code == 1
    assert "HAND-OVER FAILED" in plan_lines(output)["eventbridge:reports/hourly"][3]
    assert "run the same command again" in err
    code, output, _ = run_cli(
        stack, scheduler, "--apply", "--cutover-at", cutover, "--disable-source", tmp_path=tmp_path
    )
    assert code == 0
    assert plan_lines(output)["eventbridge:reports/hourly"][0] == "unchanged"
    assert scheduler.get_schedule(Name="hourly", GroupName="reports")["EndDate"] == START + timedelta(hours=1)


def test_importing_again_after_the_hand_over_changes_nothing_with_or_without_the_cutover(
    stack: Stack, scheduler: Any, tmp_path: Path
) -> None:
    cutover = START + timedelta(hours=1)
    add_schedule(scheduler, "hourly", "cron(0 * * * ? *)", Description="Hourly digest")
    add_schedule(scheduler, "rate-7", "rate(7 minutes)", StartDate=START - timedelta(minutes=3))
    add_schedule(scheduler, "once", f"at({(cutover + timedelta(hours=2)):%Y-%m-%dT%H:%M:%S})")
    add_schedule(scheduler, "later", "rate(1 hour)", StartDate=cutover + timedelta(days=4))
    handing_over = ("--apply", "--cutover-at", iso(cutover), "--disable-source")
    assert run_cli(stack, scheduler, *handing_over, tmp_path=tmp_path)[0] == 0
    before = {name: stored(stack, f"reports-{name}") for name in ("hourly", "rate-7", "once", "later")}
    assert before["hourly"].description == "Hourly digest", "the hand-over's record is not the trigger's"
    later = scheduler.get_schedule(Name="later", GroupName="reports")
    assert (later["State"], later.get("EndDate")) == ("DISABLED", None), "no EndDate before its StartDate"

    for again in (handing_over, ("--apply",), ("--apply", "--cutover-at", iso(cutover + timedelta(days=1)))):
        code, output, _ = run_cli(stack, scheduler, *again, tmp_path=tmp_path)
        assert code == 0
        plan = plan_lines(output)
        assert {name: plan[f"eventbridge:reports/{name}"][0] for name in before} == dict.fromkeys(before, "unchanged")
    for name, trigger in before.items():
        now = stored(stack, f"reports-{name}")
        assert (now.enabled, now.start_at, now.end_at, now.run_at) == (
            trigger.enabled,
            trigger.start_at,
            trigger.end_at,
            trigger.run_at,
        ), name


@pytest.mark.parametrize(
    ("target_input", "reason"),
    [
        ({"tenant": None, "project": "p", "agent": "a", "payload": {}}, "missing tenantId"),
        ({"tenant": {"x": 1}, "project": "p", "agent": "a", "payload": {}}, "tenantId {'x': 1} is not an id"),
        ({"tenant": "acme", "project": 7, "agent": "a", "payload": {}}, "projectId 7 is not an id"),
        ({"tenant": "acme", "project": "p/q", "agent": "a b", "payload": {}}, "projectId 'p/q' is not an id"),
    ],
)
def test_a_path_the_api_could_not_address_is_refused(
    stack: Stack, scheduler: Any, tmp_path: Path, target_input: dict[str, Any], reason: str
) -> None:
    add_schedule(scheduler, "bad-path", "rate(1 hour)", StartDate=START, target={"Input": json.dumps(target_input)})
    _, output, _ = run_cli(stack, scheduler, tmp_path=tmp_path)
    assert plan_lines(output)["eventbridge:reports/bad-path"][3].startswith(reason)


def test_rows_that_are_not_json_or_not_ids_are_refused_one_by_one(stack: Stack, tmp_path: Path) -> None:
    export = tmp_path / "rows.ndjson"
    lines = [
        json.dumps(export_row(1)),
        "9" * 5000,
        "[" * 100_000,
        json.dumps(export_row(2, projectId="p/q")),
        json.dumps(export_row(3, cronExpression=None, runAt="2027-01-01T10:00:00.123Z")),
    ]
    export.write_text("\n".join(lines))
    out = io.StringIO()
    assert migrate(["export", str(export), "--apply"], deps=stack.deps, out=out, err=io.StringIO()) == 0
    plan = plan_lines(out.getvalue())
    assert [plan[f"rows.ndjson:{n}"][0] for n in range(1, 6)] == ["create", "refused", "refused", "refused", "create"]
    assert "projectId 'p/q' is not an id" in plan["rows.ndjson:4"][3]
    again = io.StringIO()
    migrate(["export", str(export)], deps=stack.deps, out=again, err=io.StringIO())
    assert plan_lines(again.getvalue())["rows.ndjson:5"][0] == "unchanged", "runAt is compared to the second"


def test_a_json_array_written_one_row_per_line_is_read_as_json(stack: Stack, tmp_path: Path) -> None:
    export = tmp_path / "rows.json"
    export.write_text('{"items": [\n' + ",\n".join(json.dumps(export_row(n)) for n in range(3)) + "\n]}\n")
    out = io.StringIO()
    assert migrate(["export", str(export)], deps=stack.deps, out=out, err=io.StringIO()) == 0
    assert "create 3 · update 0 · unchanged 0 · refused 0" in out.getvalue()


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ({"ScheduleExpression": "cron(0 12 * * ? 9999)"}, "outside AWS's 1970-2199"),
        (
            {"ScheduleExpression": "at(2027-03-14T02:30:00)", "ScheduleExpressionTimezone": "America/New_York"},
            "does not exist in America/New_York",
        ),
        ({"ScheduleExpression": "cron(0 9 * * ? *)", "StartDate": "garbage"}, "malformed schedule"),
        ({"ScheduleExpression": "cron(0 9 * * ? *)", "FlexibleTimeWindow": "x"}, "malformed schedule"),
    ],
)
def test_malformed_or_impossible_schedules_are_refused_not_crashed_on(schedule: dict[str, Any], reason: str) -> None:
    with pytest.raises(RefusedError, match=re.escape(reason)):
        convert_schedule(schedule)

"""Where imported triggers come from: EventBridge Scheduler groups, or an export of the seed platform's table.

Each source yields `Row`s: one desired trigger (its path and API body, by wire names) or the reason it
cannot be imported. Nothing here writes anywhere.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sundial.contracts.api import ID_PATTERN
from sundial.domain.instants import format_instant

from sundial_migrate.aws_schedules import RefusedError, convert_schedule

ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
MAX_ID = 64
PATH_FIELDS = ("tenantId", "projectId", "agentId")
# The seed platform's row shape (SPEC §7): the path, and the fields a trigger is created with.
EXPORT_FIELDS = (
    "id",
    "name",
    "description",
    "enabled",
    "cronExpression",
    "cronTimezone",
    "runAt",
    "payload",
    "messageTemplate",
    "maxRetries",
    "retryDelaySeconds",
    "timeoutSeconds",
    "runAsUserId",
    "ref",
)
MAPPABLE_FIELDS = (
    *PATH_FIELDS,
    "payload",
    "messageTemplate",
    "ref",
    "runAsUserId",
    "timeoutSeconds",
    "retryDelaySeconds",
)


@dataclass
class Row:
    """One thing to import: `source` names it in the report; `refused` says why it cannot be, if so."""

    source: str
    path: tuple[str, str, str] | None = None
    body: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    refused: str | None = None
    schedule: dict[str, Any] | None = None  # the EventBridge schedule it came from, to hand over at cutover

    @property
    def target(self) -> str:
        if self.path is None:
            return "-"
        return "/".join([*self.path, str(self.body.get("id", "?"))])


def trigger_id_for(group: str, name: str) -> str:
    """`<group>-<name>` as a trigger id; lossy ones (unsafe characters, too long) get a hash to stay unique."""
    wanted = f"{group}-{name}"
    safe = ID_UNSAFE.sub("-", wanted)
    if safe == wanted and len(safe) <= MAX_ID:
        return safe
    digest = hashlib.sha256(wanted.encode()).hexdigest()[:10]
    return f"{safe[: MAX_ID - 11]}-{digest}"


def _lookup(document: Any, path: str) -> Any:
    """`$` is the whole target input, `$.a.b` a field of it; anything else is a constant."""
    if path == "$":
        return document
    value = document
    for part in path.removeprefix("$.").split("."):
        if not isinstance(value, dict) or part not in value:
            raise RefusedError(f"the target input has no {path}")
        value = value[part]
    return value


def load_mapping(path: Path) -> dict[str, Any]:
    """The mapping file: trigger fields from the target's `Input`, e.g. `{"tenantId": "$.tenant", ...}`."""
    mapping = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(mapping, dict):
        raise ValueError(f"{path}: the mapping must be a JSON object")
    unknown = sorted(set(mapping) - set(MAPPABLE_FIELDS))
    missing = [name for name in PATH_FIELDS if name not in mapping]
    if unknown or missing:
        raise ValueError(f"{path}: unknown fields {unknown}, missing {missing}; allowed: {', '.join(MAPPABLE_FIELDS)}")
    return mapping


def mapped_fields(mapping: dict[str, Any], target_input: Any) -> dict[str, Any]:
    return {
        name: _lookup(target_input, value) if isinstance(value, str) and value.startswith("$") else value
        for name, value in mapping.items()
    }


def schedule_row(schedule: dict[str, Any], mapping: dict[str, Any], cutover_at: datetime | None) -> Row:
    group, name = str(schedule.get("GroupName", "default")), str(schedule["Name"])
    row = Row(f"eventbridge:{group}/{name}", schedule=schedule)
    try:
        converted = convert_schedule(schedule, cutover_at)
        raw_input = (schedule.get("Target") or {}).get("Input")
        try:
            target_input = json.loads(raw_input) if raw_input else {}
        except (ValueError, RecursionError):
            raise RefusedError("the target's Input is not JSON") from None
        fields = mapped_fields(mapping, target_input)
        row.path = checked_path(fields)
    except RefusedError as refused:
        row.refused = str(refused)
        return row
    extra = {name: value for name, value in fields.items() if name not in PATH_FIELDS}
    row.body = {"id": trigger_id_for(group, name), "name": name, **converted.fields, **extra}
    row.notes = converted.notes
    return row


def checked_path(values: dict[str, Any]) -> tuple[str, str, str]:
    """tenantId, projectId and agentId as the API's routes accept them, or the reason they are not."""
    parts: list[str] = []
    for name in PATH_FIELDS:
        value = values.get(name)
        if value is None:
            raise RefusedError(f"missing {name}")
        if not isinstance(value, str) or not re.fullmatch(ID_PATTERN, value):
            raise RefusedError(f"{name} {value!r} is not an id (1-64 letters, digits, - and _)")
        parts.append(value)
    return parts[0], parts[1], parts[2]


def eventbridge_rows(
    scheduler: Any, groups: list[str], mapping: dict[str, Any], cutover_at: datetime | None
) -> Iterator[Row]:
    """Every schedule of the groups, read with GetSchedule (ListSchedules leaves out the expression)."""
    for group in groups:
        for page in scheduler.get_paginator("list_schedules").paginate(GroupName=group):
            for summary in page["Schedules"]:
                schedule = scheduler.get_schedule(Name=summary["Name"], GroupName=group)
                schedule.pop("ResponseMetadata", None)
                yield schedule_row(schedule, mapping, cutover_at)


def _export_records(path: Path) -> Iterator[tuple[str, Any]]:
    """A JSON array (or `{"items": [...]}`), else NDJSON: one row per line, each line on its own."""
    text = path.read_text(encoding="utf-8")
    document: Any = None
    if path.suffix != ".ndjson":
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            document = None
    records = document.get("items") if isinstance(document, dict) else document
    if isinstance(records, list):
        for number, record in enumerate(records, start=1):
            yield f"{path.name}[{number}]", record
        return
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            try:
                yield f"{path.name}:{number}", json.loads(line)
            except (ValueError, RecursionError) as error:
                yield f"{path.name}:{number}", ValueError(str(error)[:200])


def export_rows(path: Path, cutover_at: datetime | None) -> Iterator[Row]:
    """Rows of a JSON array or NDJSON export; other columns of the seed table (lastRunAt, …) are ignored."""
    for source, record in _export_records(path):
        row = Row(source)
        if isinstance(record, Exception):
            row.refused = f"not JSON: {record}"
        elif not isinstance(record, dict):
            row.refused = "not a JSON object"
        elif missing := [name for name in (*PATH_FIELDS, "id") if record.get(name) is None]:
            row.refused = f"missing {', '.join(missing)}"
        else:
            try:
                row.path = checked_path(record)
            except RefusedError as refused:
                row.refused = str(refused)
                yield row
                continue
            row.body = {name: record[name] for name in EXPORT_FIELDS if record.get(name) is not None}
            ignored = sorted(set(record) - set(EXPORT_FIELDS) - set(PATH_FIELDS))
            if ignored:
                row.notes.append(f"ignored {', '.join(ignored)}")
            _cut_over(row, cutover_at)
        yield row


def _cut_over(row: Row, cutover_at: datetime | None) -> None:
    """A row's schedule from the cutover on: recurring ones start at it; one-time runs before it stay behind."""
    if cutover_at is None:
        return
    run_at = row.body.get("runAt")
    if isinstance(run_at, str):
        try:
            moment = datetime.fromisoformat(run_at.replace("Z", "+00:00"))
        except ValueError:
            return  # the API's validation names the field
        if moment.tzinfo is not None and moment < cutover_at:
            row.refused = "runAt is before the cutover, so it stays with the old system"
    elif "cronExpression" in row.body:
        row.body["startAt"] = format_instant(cutover_at)

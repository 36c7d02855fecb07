"""Plan and apply an import: each row becomes create, update, unchanged or refused, through the API's own
models and services (no second write path), so a row is written whole or not at all."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError
from sundial.contracts.api import SchedulePreviewRequest, Trigger, TriggerCreate, TriggerPatch
from sundial.deps import Deps
from sundial.domain.auth import Principal
from sundial.domain.errors import NotFoundError, SundialError
from sundial.services import triggers

from sundial_migrate.sources import Row

Action = Literal["create", "update", "unchanged", "refused"]
MIGRATION_USER = "sundial-migration"
# The trigger fields an import manages; an existing trigger differing in any of them is updated.
MANAGED = tuple(name for name in TriggerCreate.model_fields if name != "id")


@dataclass
class Planned:
    row: Row
    action: Action
    detail: str = ""
    create: TriggerCreate | None = None
    patch: TriggerPatch | None = None
    written: bool = False


@dataclass
class Report:
    planned: list[Planned] = field(default_factory=list)

    @property
    def totals(self) -> Counter[str]:
        return Counter(item.action for item in self.planned)


def _problems(error: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in problem['loc'])}: {problem['msg']}" for problem in error.errors())


def _same(current: Any, wanted: Any) -> bool:
    if isinstance(current, datetime) and isinstance(wanted, datetime):
        return current == wanted.replace(microsecond=0)  # stored to the second, as the API stores them
    return bool(current == wanted)


def _changes(existing: Trigger, wanted: TriggerCreate) -> dict[str, Any]:
    return {
        name: getattr(wanted, name)
        for name in MANAGED
        if not _same(getattr(existing, name, None), getattr(wanted, name))
    }


def _principal(tenant_id: str) -> Principal:
    """The import acts as an admin of each row's tenant: it may set any runAsUserId, as the old system did."""
    return Principal(MIGRATION_USER, tenant_id, frozenset({"admin"}))


def _described(error: SundialError) -> str:
    details = "; ".join(f"{detail.get('field')}: {detail.get('message')}" for detail in error.details)
    return f"{error.message} ({details})" if details else error.message


def _schedule_problem(deps: Deps, tenant_id: str, wanted: TriggerCreate) -> str | None:
    """What the API would refuse about the schedule or runAs, found without writing: a dry run names it too."""
    try:
        _principal(tenant_id).check_run_as(wanted.run_as_user_id)
        preview = triggers.preview_schedule(
            deps,
            SchedulePreviewRequest(
                cron_expression=wanted.cron_expression,
                cron_timezone=wanted.cron_timezone,
                run_at=wanted.run_at,
                interval_seconds=wanted.interval_seconds,
                start_at=wanted.start_at,
                end_at=wanted.end_at,
                max_runs=wanted.max_runs,
                jitter_seconds=wanted.jitter_seconds,
                count=1,
            ),
        )
    except SundialError as error:
        return _described(error)
    return None if preview.next_runs else "the schedule has no occurrence ahead (runAt or endAt is past)"


def plan_row(deps: Deps, row: Row) -> Planned:
    if row.refused is not None or row.path is None:
        return Planned(row, "refused", row.refused or "no path")
    try:
        wanted = TriggerCreate.model_validate(row.body)
    except ValidationError as error:
        return Planned(row, "refused", _problems(error))
    problem = _schedule_problem(deps, row.path[0], wanted)
    if problem is not None:
        return Planned(row, "refused", problem)
    path = triggers.AgentPath(*row.path)
    trigger_id = str(wanted.id)
    try:
        existing = triggers.get_trigger(deps, _principal(path.tenant_id), path, trigger_id)
    except NotFoundError:
        return Planned(row, "create", "; ".join(row.notes), create=wanted)
    except SundialError as error:
        return Planned(row, "refused", error.message)
    changes = _changes(existing, wanted)
    if not changes:
        return Planned(row, "unchanged", "; ".join(row.notes))
    try:
        patch = TriggerPatch.model_validate(changes)
    except ValidationError as error:
        return Planned(row, "refused", _problems(error))
    return Planned(
        row, "update", ", ".join(sorted(TriggerCreate.model_fields[n].alias or n for n in changes)), patch=patch
    )


def apply(deps: Deps, planned: Planned) -> None:
    """Write one planned row through the services; a refusal there (e.g. a runAt now past) marks it refused."""
    row = planned.row
    if row.path is None or planned.action not in ("create", "update"):
        return
    path = triggers.AgentPath(*row.path)
    try:
        if planned.create is not None:
            triggers.create_trigger(deps, _principal(path.tenant_id), path, planned.create)
        elif planned.patch is not None:
            trigger_id = str(row.body["id"])
            triggers.update_trigger(deps, _principal(path.tenant_id), path, trigger_id, planned.patch)
    except SundialError as error:
        planned.action, planned.detail = "refused", _described(error)
        return
    planned.written = True


def run(
    deps: Deps,
    rows: Iterable[Row],
    *,
    write: bool,
    progress: Callable[[int], None] = lambda _count: None,
) -> Report:
    """Plan every row (and write it, with `write`); a bad row is reported and the rest go on."""
    report = Report()
    for count, planned in enumerate(_planned(deps, rows), start=1):
        if write:
            apply(deps, planned)
        report.planned.append(planned)
        progress(count)
    return report


def _planned(deps: Deps, rows: Iterable[Row]) -> Iterator[Planned]:
    seen: dict[tuple[str, str], str] = {}
    for row in rows:
        if row.path is not None and row.refused is None:
            key = (row.path[0], str(row.body.get("id")))
            if key in seen:
                yield Planned(row, "refused", f"trigger id {key[1]} is also imported from {seen[key]}")
                continue
            seen[key] = row.source
        yield plan_row(deps, row)

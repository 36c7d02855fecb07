"""`make migrate ARGS=...`: import schedules into Sundial. Dry run unless --apply; see docs/migration.md.

    python -m sundial_migrate eventbridge --group reports --mapping mapping.json [--cutover-at T [--disable-source]]
    python -m sundial_migrate export triggers.ndjson [--cutover-at T]
    python -m sundial_migrate run-as-index [--apply]

It writes to the tables named by the same settings the functions read (TRIGGERS_TABLE, INVOCATIONS_TABLE,
AWS_REGION, DYNAMODB_ENDPOINT_URL, STATE_MACHINE_ARN).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import boto3
from botocore.exceptions import ClientError
from sundial.deps import Deps
from sundial.domain.instants import format_instant
from sundial.services import cascades
from sundial.settings import get_settings

from sundial_migrate import cutover, plan, sources

PROGRESS_EVERY = 100
COLUMNS = ("ACTION", "SOURCE", "TRIGGER", "DETAIL")


def _instant(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO-8601 instant such as 2027-01-04T00:00:00Z") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} needs a Z or an offset")
    return moment.astimezone(UTC).replace(microsecond=0)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="make migrate ARGS=...",
        description="Import schedules into Sundial. Prints the plan (create / update / unchanged / refused, "
        "with reasons) and writes nothing unless --apply is given; running it again reports unchanged.",
    )
    kinds = top.add_subparsers(dest="source", required=True)
    eventbridge = kinds.add_parser("eventbridge", help="schedules of EventBridge Scheduler groups")
    eventbridge.add_argument("--group", action="append", required=True, help="schedule group (repeatable)")
    eventbridge.add_argument(
        "--mapping", type=Path, required=True, help="JSON file mapping the target's Input to tenantId, projectId, …"
    )
    eventbridge.add_argument(
        "--disable-source",
        action="store_true",
        help="with --apply and --cutover-at: hand each imported schedule over at the cutover (EndDate = T)",
    )
    export = kinds.add_parser("export", help="a JSON or NDJSON export of the seed platform's triggers table")
    export.add_argument("file", type=Path)
    kinds.add_parser(
        "run-as-index",
        help="give triggers stored before the by_run_as index their key, so cascades by user find them",
    ).add_argument("--apply", action="store_true", help="write the keys (default: dry run)")
    for sub in (eventbridge, export):
        sub.add_argument("--apply", action="store_true", help="write the plan (default: dry run)")
        sub.add_argument(
            "--cutover-at",
            type=_instant,
            help="instant T from which Sundial runs the schedules: its first occurrence is the first at or after T",
        )
    return top


def _table(report: plan.Report, out: TextIO) -> None:
    rows = [(item.action, item.row.source, item.row.target, item.detail) for item in report.planned]
    widths = [max([len(COLUMNS[i]), *(len(row[i]) for row in rows)]) for i in range(3)]
    for row in [COLUMNS, *rows]:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)) + f"  {row[3]}\n")
    totals = report.totals
    out.write(
        " · ".join(f"{action} {totals.get(action, 0)}" for action in ("create", "update", "unchanged", "refused"))
    )
    out.write(f" · {len(report.planned)} rows\n")


def _progress(err: TextIO) -> Callable[[int], None]:
    def report(count: int) -> None:
        if count % PROGRESS_EVERY == 0:
            err.write(f"… {count} rows\n")
            err.flush()

    return report


def _index_run_as_users(*, write: bool, out: TextIO, err: TextIO) -> int:
    report = cascades.index_run_as_users(write=write, progress=_progress(err))
    out.write(f"{report.found} triggers with a runAs user were missing from the by_run_as index")
    if write:
        out.write(
            f"; indexed {report.indexed}, {report.changed_meanwhile} changed meanwhile (their edit indexed them)\n"
        )
    else:
        out.write("\ndry run: nothing was written (add --apply to write)\n")
    return 0


def migrate(
    argv: Sequence[str],
    *,
    deps: Deps,
    scheduler: Any = None,
    now: datetime | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """The CLI with its clients injected (tests pass moto's); returns the exit status."""
    args = parser().parse_args(argv)
    if args.source == "run-as-index":
        return _index_run_as_users(write=args.apply, out=out, err=err)
    cutover_at: datetime | None = args.cutover_at
    moment = now or deps.now()
    handing_over = getattr(args, "disable_source", False)
    if handing_over and (cutover_at is None or not args.apply):
        err.write("--disable-source needs --cutover-at and --apply: the hand-over happens at the cutover instant\n")
        return 2
    if args.apply and cutover_at is not None and cutover_at <= moment:
        err.write(f"--cutover-at {format_instant(cutover_at)} is not in the future; pick an instant after now\n")
        return 2
    rows: Iterable[sources.Row]
    if args.source == "eventbridge":
        try:
            mapping = sources.load_mapping(args.mapping)
        except (OSError, ValueError) as error:
            err.write(f"{error}\n")
            return 2
        client = scheduler or boto3.client("scheduler")
        rows = sources.eventbridge_rows(client, args.group, mapping, cutover_at)
    else:
        try:
            rows = list(sources.export_rows(args.file, cutover_at))
        except (OSError, ValueError) as error:
            err.write(f"{error}\n")
            return 2
    report = plan.run(deps, rows, write=args.apply, progress=_progress(err))
    failed_hand_overs = 0
    if handing_over and cutover_at is not None:
        for item in report.planned:
            if item.row.schedule is None or item.action == "refused":
                continue
            try:
                handed = cutover.hand_over(client, item.row.schedule, cutover_at)
            except ClientError as error:
                failed_hand_overs += 1
                handed = f"HAND-OVER FAILED, the source still runs after T: {error}"
            item.detail = "; ".join(filter(None, [item.detail, handed]))
    _table(report, out)
    if not args.apply:
        out.write("dry run: nothing was written (add --apply to write)\n")
    if failed_hand_overs:
        err.write(f"{failed_hand_overs} schedules were not handed over; run the same command again\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return migrate(sys.argv[1:] if argv is None else argv, deps=Deps(get_settings()))


if __name__ == "__main__":
    sys.exit(main())

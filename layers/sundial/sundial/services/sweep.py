"""The sweep: closes invocations whose execution ended, or never began, without the record saying so.

The watcher closes them from Step Functions' status-change events, which are best-effort: a lost
event would leave an invocation open for good (and a `skip` trigger skipping forever). The sweep
walks every register of unfinished runs and asks Step Functions about each run old enough to have
started; one whose execution has ended is closed exactly as the watcher would have closed it.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sundial.adapters.aws_retry import Backoff
from sundial.deps import Deps
from sundial.services import runner
from sundial.services.invocations import execution_input
from sundial.store import invocations as invocation_store
from sundial.store.records import REGISTER_SHARDS, InvocationRecord

logger = logging.getLogger(__name__)

# Younger runs are left alone: a run-now's execution may be a moment from starting.
SWEEP_GRACE = timedelta(minutes=10)
# A pass stops with this much of its function's time left, to report what it did.
TIME_MARGIN_SECONDS = 30.0
NEVER_STARTED = "Sundial.NeverStarted"


@dataclass
class SweepReport:
    looked_at: int = 0
    closed: list[str] = field(default_factory=list)
    errors: int = 0
    stopped_early: bool = False


def _ending(deps: Deps, record: InvocationRecord) -> runner.EndedExecution | None:
    """How the record's execution ended, per DescribeExecution; None while it still runs."""
    sfn = deps.sfn
    if record.execution_arn:
        try:
            described = Backoff().call(lambda: sfn.describe_execution(executionArn=str(record.execution_arn)))
        except sfn.exceptions.ExecutionDoesNotExist:
            described = None
        if described is not None:
            if described["status"] in ("RUNNING", "PENDING_REDRIVE"):
                return None
            status = described["status"] if described["status"] in ("FAILED", "TIMED_OUT", "ABORTED") else "FAILED"
            return runner.EndedExecution(
                execution_arn=str(record.execution_arn),
                status=status,
                input=execution_input(record).to_json(),
                error=described.get("error") or "Sundial.EndedOpen",
                cause=described.get("cause") or f"the execution ended {described['status']} with its run open",
            )
    return runner.EndedExecution(
        execution_arn=str(record.execution_arn or ""),
        status="FAILED",
        input=execution_input(record).to_json(),
        error=NEVER_STARTED,
        cause="its execution never started",
    )


def sweep(
    deps: Deps, remaining_seconds: Callable[[], float] = lambda: float("inf"), first_shard: int | None = None
) -> SweepReport:
    """One pass over every unfinished run older than SWEEP_GRACE; idempotent, so passes may overlap.

    A run that cannot be looked at (an error from Step Functions or a table) is logged and counted,
    and the pass goes on. The pass stops when its function is about to run out of time, starting
    each time at another shard so that no shard is always the one left out.
    """
    report = SweepReport()
    before = deps.now() - SWEEP_GRACE
    start = random.randrange(REGISTER_SHARDS) if first_shard is None else first_shard
    for partition in invocation_store.registered_partitions(start):
        if remaining_seconds() < TIME_MARGIN_SECONDS:
            report.stopped_early = True
            break
        try:
            records = invocation_store.open_invocations_in(partition)
        except Exception:
            logger.exception("sweep could not read the open runs of %s", partition)
            report.errors += 1
            continue
        for record in records:
            if record.created_at > before:
                continue
            report.looked_at += 1
            try:
                _close_if_ended(deps, record, report)
            except Exception:
                logger.exception("sweep could not look at invocation %s", record.invocation_id)
                report.errors += 1
    return report


def _close_if_ended(deps: Deps, record: InvocationRecord, report: SweepReport) -> None:
    ended = _ending(deps, record)
    if ended is None:
        return
    closed = runner.close_ended_execution(deps, ended)
    if closed.closed:
        logger.warning("sweep closed invocation %s as %s: %s", record.invocation_id, closed.status, ended.cause)
        report.closed.append(record.invocation_id)

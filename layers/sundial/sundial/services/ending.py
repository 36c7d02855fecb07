"""Ending an invocation: the final write, then its announcement (SPEC §5, run events).

Every service ends runs through `finish` here, never through the store directly (a test checks
it), so no way of ending a run can forget the "Sundial Invocation Finished" event.
"""

from __future__ import annotations

import logging
from collections.abc import Collection

from sundial.contracts.api import InvocationStatus
from sundial.contracts.events import InvocationFinished
from sundial.deps import Deps
from sundial.store import invocations as invocation_store
from sundial.store.invocations import UNFINISHED, AttemptWrite
from sundial.store.records import InvocationRecord

logger = logging.getLogger(__name__)


def finish(
    deps: Deps,
    record: InvocationRecord,
    status: InvocationStatus,
    error: str | None = None,
    attempt: AttemptWrite | None = None,
    only_from: Collection[str] = UNFINISHED,
) -> bool:
    """`store.invocations.finish`, and when this call was the one that ended the run, its event."""
    if not invocation_store.finish(deps, record, status, error, attempt=attempt, only_from=only_from):
        return False
    try:
        deps.run_events.finished(finished_event(record))
    except Exception:  # an unsent event never fails a run: the final status is already stored
        logger.exception("could not announce the end of invocation %s", record.invocation_id)
    return True


def finished_event(record: InvocationRecord) -> InvocationFinished:
    """The event of a record just made final (the store's write left the record as stored)."""
    return InvocationFinished.model_validate(record, from_attributes=True)

"""Names derived, not drawn, wherever a retry must land on the same thing (SPEC §5).

The execution name of an occurrence is its idempotency key, and its invocation id is derived from
that, so a re-driven claim or a repeated run-now request finds what the first one made.
"""

from __future__ import annotations

import hashlib
from datetime import datetime

from sundial.contracts.api import InvocationKind
from sundial.domain.instants import compact_instant


def _digest(*parts: str, length: int = 16) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:length]


def scheduled_execution_name(
    tenant_id: str, trigger_id: str, incarnation: str, schedule_version: int, at: datetime
) -> str:
    """The idempotency key of an occurrence, e.g. `s-<hash>-v3-20261126T150000Z` (≤ 80 chars).

    The hash covers the trigger's incarnation, so a trigger deleted and re-created under the same id
    (schedule version 1 again) cannot collide with the executions of its predecessor.
    """
    return f"s-{_digest(tenant_id, trigger_id, incarnation)}-v{schedule_version}-{compact_instant(at)}"


def backfill_execution_name(tenant_id: str, trigger_id: str, incarnation: str, at: datetime) -> str:
    """The idempotency key of a backfilled occurrence, e.g. `b-<hash>-20261126T150000Z`.

    One per (incarnation, instant) and none per request, so posting a range again finds the runs the
    first request started; it never collides with the scheduled run of the same instant (`s-…`).
    """
    return f"b-{_digest(tenant_id, trigger_id, incarnation)}-{compact_instant(at)}"


def invocation_id_for(idempotency_key: str, scheduled_for: datetime) -> str:
    """Time-sortable id derived from the idempotency key: `20261126T150000Z-<hash>`."""
    return f"{compact_instant(scheduled_for)}-{_digest(idempotency_key, length=20)}"


def manual_execution_name(
    kind: InvocationKind, tenant_id: str, trigger_id: str, incarnation: str, invocation_id: str
) -> str:
    return f"{kind[0]}-{_digest(tenant_id, trigger_id, incarnation)}-{invocation_id}"


def execution_arn_for(state_machine_arn: str, execution_name: str) -> str:
    """The ARN Step Functions gives an execution of `state_machine_arn` named `execution_name`."""
    return f"{state_machine_arn.replace(':stateMachine:', ':execution:')}:{execution_name}"


def idempotency_hash(key: str) -> str:
    """A run-now `Idempotency-Key` as stored: fixed length whatever the client sent."""
    return hashlib.sha256(key.encode()).hexdigest()

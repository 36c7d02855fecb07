"""DynamoDB records (pynamodb) for triggers and invocations; key design in docs/decisions.md.

Tables and index names come from template.yaml; `bind_tables` points the models at the
deployed (or emulated) tables at run time, so nothing is configured at import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pynamodb.attributes import (
    Attribute,
    BooleanAttribute,
    JSONAttribute,
    ListAttribute,
    NumberAttribute,
    TTLAttribute,
    UnicodeAttribute,
    UnicodeSetAttribute,
)
from pynamodb.constants import STRING
from pynamodb.exceptions import PutError, UpdateError
from pynamodb.indexes import AllProjection, GlobalSecondaryIndex, IncludeProjection, KeysOnlyProjection
from pynamodb.models import Model

from sundial.domain.instants import format_instant, parse_instant
from sundial.settings import Settings


class InstantAttribute(Attribute[datetime]):
    """A UTC instant stored as `2026-11-26T15:00:00Z`."""

    attr_type = STRING

    def serialize(self, value: datetime) -> str:
        return format_instant(value)

    def deserialize(self, value: str) -> datetime:
        return parse_instant(value)


def trigger_pk(tenant_id: str, trigger_id: str) -> str:
    return f"{tenant_id}#{trigger_id}"


def invocation_partition(tenant_id: str, trigger_id: str, incarnation: str) -> str:
    """The invocations of one incarnation of a trigger: a re-created trigger starts an empty history."""
    return f"{tenant_id}#{trigger_id}#{incarnation}"


def project_key(tenant_id: str, project_id: str) -> str:
    return f"{tenant_id}#{project_id}"


def agent_trigger_key(agent_id: str, trigger_id: str) -> str:
    return f"{agent_id}#{trigger_id}"


def run_as_key(tenant_id: str, run_as_user_id: str | None) -> str | None:
    """Key of the sparse `by_run_as` index: only triggers with a runAs user are in it."""
    return f"{tenant_id}#{run_as_user_id}" if run_as_user_id is not None else None


def due_shard_for(tenant_id: str, trigger_id: str, shard_count: int) -> int:
    """Stable shard of a trigger in the due index, from a hash of tenant and trigger id."""
    digest = hashlib.sha256(f"{tenant_id}\x00{trigger_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % shard_count


class ProjectIndex(GlobalSecondaryIndex["TriggerRecord"]):
    """Triggers of a project, sorted by agent then trigger id (list by project, or by agent with a prefix)."""

    class Meta:
        index_name = "by_project"
        projection = AllProjection()

    project_key = UnicodeAttribute(hash_key=True)
    agent_trigger = UnicodeAttribute(range_key=True)


class RunAsIndex(GlobalSecondaryIndex["TriggerRecord"]):
    """Sparse, keys only: a tenant's triggers that run as a user, for the cascade when the user is removed."""

    class Meta:
        index_name = "by_run_as"
        projection = KeysOnlyProjection()

    run_as_key = UnicodeAttribute(hash_key=True)


DUE_INDEX_ATTRIBUTES = [
    "tenant_id",
    "project_id",
    "agent_id",
    "trigger_id",
    "incarnation",
    "cron_expression",
    "cron_timezone",
    "run_at",
    "interval_seconds",
    "start_at",
    "end_at",
    "jitter_seconds",
    "next_run_at",
    "schedule_version",
    "catch_up_window_seconds",
    "claim_for",
    "claim_name",
    "claim_version",
]


class DueIndex(GlobalSecondaryIndex["TriggerRecord"]):
    """Sparse: holds only triggers the dispatcher must look at, sharded so no partition takes all writes."""

    class Meta:
        index_name = "due"
        projection = IncludeProjection(DUE_INDEX_ATTRIBUTES)

    due_shard = NumberAttribute(hash_key=True)
    due_at = UnicodeAttribute(range_key=True)


class TriggerRecord(Model):
    """One trigger. `due_shard`/`due_at` exist only while the dispatcher has work for it."""

    class Meta:
        table_name = "sundial-triggers"
        region = "us-east-1"

    pk = UnicodeAttribute(hash_key=True)
    project_key = UnicodeAttribute()
    agent_trigger = UnicodeAttribute()
    tenant_id = UnicodeAttribute()
    project_id = UnicodeAttribute()
    agent_id = UnicodeAttribute()
    trigger_id = UnicodeAttribute()
    # Random per creation: a trigger re-created under a deleted one's id never reuses its execution names.
    incarnation = UnicodeAttribute()
    name = UnicodeAttribute()
    description = UnicodeAttribute(null=True)
    enabled = BooleanAttribute(default=True)
    cron_expression = UnicodeAttribute(null=True)
    cron_timezone = UnicodeAttribute(default="UTC")
    run_at = InstantAttribute(null=True)
    interval_seconds = NumberAttribute(null=True)
    # Bounds of a recurring schedule; an interval trigger always has start_at (its anchor).
    start_at = InstantAttribute(null=True)
    end_at = InstantAttribute(null=True)
    jitter_seconds = NumberAttribute(null=True)  # absent: 0
    max_runs = NumberAttribute(null=True)
    # Scheduled runs that started, counted once each when the run becomes running (maxRuns).
    runs_started = NumberAttribute(null=True)
    # Why the schedule is over: "ended" (one-time run over, or past endAt) or "max_runs"; cleared by enabling.
    finished_reason = UnicodeAttribute(null=True)
    payload = JSONAttribute(null=True)
    message_template = UnicodeAttribute(null=True)
    max_retries = NumberAttribute(default=1)
    retry_delay_seconds = NumberAttribute(default=60)
    timeout_seconds = NumberAttribute(default=780)
    run_as_user_id = UnicodeAttribute(null=True)
    run_as_key = UnicodeAttribute(null=True)  # tenant#runAsUserId while there is a runAs user (by_run_as)
    ref = UnicodeAttribute(default="main")
    # When an edit last moved the trigger to its branch / runAs user: a cascade of that scope
    # accepted before then does not stand its runs down (absent: since createdAt).
    ref_since = InstantAttribute(null=True)
    run_as_since = InstantAttribute(null=True)
    catch_up_window_seconds = NumberAttribute(default=3600)
    overlap_policy = UnicodeAttribute(default="allow")
    pause_on_failure = BooleanAttribute(null=True)  # absent on triggers written before it existed: off
    paused_reason = UnicodeAttribute(null=True)
    created_by = UnicodeAttribute()
    created_at = InstantAttribute()
    updated_at = InstantAttribute()
    # Optimistic concurrency for edits: every API write conditions on and bumps it.
    revision = NumberAttribute(default=1)
    # Bumped by every change of cron, zone, runAt, interval, bounds, jitter or enabled; part of each execution name.
    schedule_version = NumberAttribute(default=1)
    next_run_at = InstantAttribute(null=True)
    missed_runs_skipped = NumberAttribute(default=0)
    last_run_at = InstantAttribute(null=True)
    last_run_status = UnicodeAttribute(null=True)
    last_run_conversation_ids = ListAttribute(of=UnicodeAttribute, null=True)
    # The latest run that reached an outcome (completed or failed): a skipped occurrence does not hide it.
    last_outcome_at = InstantAttribute(null=True)
    last_outcome_status = UnicodeAttribute(null=True)
    # Due index keys (sparse) and the outstanding claim, see docs/dispatch.md.
    due_shard = NumberAttribute(null=True)
    due_at = UnicodeAttribute(null=True)
    claim_for = InstantAttribute(null=True)
    claim_name = UnicodeAttribute(null=True)
    claim_version = NumberAttribute(null=True)
    # The latest occurrence claimed for dispatch; kept after the release so nextRunAt can show it
    # while its execution waits for its instant (SPEC §2).
    dispatched_for = InstantAttribute(null=True)
    # When each recent schedule version ended ({"3": "2026-11-26T15:00:00Z"}): an occurrence whose
    # instant passed before the edit that ended its version is not superseded (docs/decisions.md).
    version_ends = JSONAttribute(null=True)

    by_project = ProjectIndex()
    due = DueIndex()
    by_run_as = RunAsIndex()


class ProjectHistoryIndex(GlobalSecondaryIndex["InvocationRecord"]):
    """Keys only: a project's invocations by time, deleted triggers' included (until TTL removes them).

    Its keys never change after an invocation is created, so it costs one index write per run.
    """

    class Meta:
        index_name = "project_history"
        projection = KeysOnlyProjection()

    project_key = UnicodeAttribute(hash_key=True)
    invocation_id = UnicodeAttribute(range_key=True)


class InvocationRecord(Model):
    """One occurrence or manual run. `invocation_id` starts with the compact scheduledFor, so it sorts by time."""

    class Meta:
        table_name = "sundial-invocations"
        region = "us-east-1"

    trigger_key = UnicodeAttribute(hash_key=True)
    invocation_id = UnicodeAttribute(range_key=True)
    tenant_id = UnicodeAttribute()
    project_id = UnicodeAttribute()
    agent_id = UnicodeAttribute()
    trigger_id = UnicodeAttribute()
    incarnation = UnicodeAttribute()
    kind = UnicodeAttribute()
    status = UnicodeAttribute()
    scheduled_for = InstantAttribute()
    starts_at = InstantAttribute(null=True)  # absent: scheduled_for (no jitter)
    created_at = InstantAttribute()
    started_at = InstantAttribute(null=True)
    completed_at = InstantAttribute(null=True)
    attempt_number = NumberAttribute(default=0)
    attempts = JSONAttribute(default=list)
    conversation_ids = ListAttribute(of=UnicodeAttribute, default=list)
    ref = UnicodeAttribute()
    idempotency_key = UnicodeAttribute()
    execution_name = UnicodeAttribute(null=True)
    execution_arn = UnicodeAttribute(null=True)
    schedule_version = NumberAttribute(null=True)
    rerun_of = UnicodeAttribute(null=True)
    error = UnicodeAttribute(null=True)
    expires_at = TTLAttribute(null=True)
    project_key = UnicodeAttribute(null=True)  # tenant#project: absent on records written before project history
    project_history = ProjectHistoryIndex()


class IdempotencyRecord(Model):
    """Maps a run-now `Idempotency-Key` to the invocation it created; lives in the invocations table."""

    class Meta:
        table_name = "sundial-invocations"
        region = "us-east-1"

    trigger_key = UnicodeAttribute(hash_key=True)
    invocation_id = UnicodeAttribute(range_key=True)
    target_invocation_id = UnicodeAttribute()
    expires_at = TTLAttribute(null=True)


# Sort key of an incarnation's register of unfinished invocations; sorts before every invocation id.
OPEN_REGISTER_KEY = "#open"
# The registers index is spread over this many partitions (a register's shard is a hash of its key).
REGISTER_SHARDS = 16


def register_shard_for(partition: str) -> int:
    digest = hashlib.sha256(partition.encode()).digest()
    return int.from_bytes(digest[:8], "big") % REGISTER_SHARDS


class RegistersIndex(GlobalSecondaryIndex["OpenRegisterRecord"]):
    """Every incarnation's register with the ids it holds: what the sweep walks.

    A register stays (empty) until TTL removes it, so the index projects `open_ids` and the sweep
    reads only the registers that name runs. Read by the sweep alone, for which a lag of seconds
    does not matter (it looks at runs minutes old, each read again consistently).
    """

    class Meta:
        index_name = "registers"
        projection = IncludeProjection(["open_ids"])

    register_shard = NumberAttribute(hash_key=True)


class OpenRegisterRecord(Model):
    """The ids of an incarnation's unfinished invocations, in its invocations partition.

    Read with a strongly consistent GetItem by overlap checks and cancels: an index of open runs
    would be eventually consistent in DynamoDB and could miss an invocation created a moment ago.
    """

    class Meta:
        table_name = "sundial-invocations"
        region = "us-east-1"

    trigger_key = UnicodeAttribute(hash_key=True)
    invocation_id = UnicodeAttribute(range_key=True, default=OPEN_REGISTER_KEY)
    open_ids = UnicodeSetAttribute(null=True)
    # overlapPolicy buffer_one: the invocation that holds the one place to wait, while it is pending.
    waiting_id = UnicodeAttribute(null=True)
    expires_at = TTLAttribute(null=True)
    register_shard = NumberAttribute(null=True)
    registers = RegistersIndex()


# Marks the due-index shard counts still in use, see docs/dispatch.md ("Changing the shard count").
SHARD_MARKER_PK = "#due-shards"


class ShardMarkerRecord(Model):
    """The highest due-shard count any writer used whose rows may not all be re-sharded yet."""

    class Meta:
        table_name = "sundial-triggers"
        region = "us-east-1"

    pk = UnicodeAttribute(hash_key=True, default=SHARD_MARKER_PK)
    shard_count = NumberAttribute()
    # Since when every re-shard pass found the shards above the configured count empty.
    empty_since = InstantAttribute(null=True)


# Cascade records and scope tombstones live in the triggers table under these key prefixes (a
# trigger's key starts with its tenant id, which has no `#`); neither is in any index.
CASCADE_PREFIX = "#cascade#"
TOMBSTONE_PREFIX = "#scope#"


def cascade_pk(tenant_id: str, cascade_id: str) -> str:
    return f"{CASCADE_PREFIX}{tenant_id}#{cascade_id}"


def tombstone_pk(scope_key: str) -> str:
    return f"{TOMBSTONE_PREFIX}{scope_key}"


class CascadeRecord(Model):
    """One cascade: its scope, its progress, and where its paging has got to (docs/decisions.md)."""

    class Meta:
        table_name = "sundial-triggers"
        region = "us-east-1"

    pk = UnicodeAttribute(hash_key=True)
    tenant_id = UnicodeAttribute()
    cascade_id = UnicodeAttribute()
    scope_kind = UnicodeAttribute()
    project_id = UnicodeAttribute(null=True)
    agent_id = UnicodeAttribute(null=True)
    ref = UnicodeAttribute(null=True)
    user_id = UnicodeAttribute(null=True)
    origin = UnicodeAttribute()  # "api" or "event"
    state = UnicodeAttribute()  # running, completed
    accepted_at = InstantAttribute()
    completed_at = InstantAttribute(null=True)
    found = NumberAttribute(default=0)
    deleted = NumberAttribute(default=0)
    invocations_cancelled = NumberAttribute(default=0)
    executions_stopped = NumberAttribute(default=0)
    # Paging: the index position after the last planned page (None: the pass starts at the top),
    # the pass (1, then one after each pause), and the page planned but not yet committed.
    cursor = JSONAttribute(null=True)
    pass_number = NumberAttribute(default=1)
    page_number = NumberAttribute(default=0)
    deleted_before_pass = NumberAttribute(default=0)
    plan = ListAttribute(of=UnicodeAttribute, null=True)
    plan_incarnations = ListAttribute(of=UnicodeAttribute, null=True)
    plan_is_last = BooleanAttribute(null=True)


class ScopeTombstoneRecord(Model):
    """The latest cascade accepted for a scope: no trigger in the scope since before then may run."""

    class Meta:
        table_name = "sundial-triggers"
        region = "us-east-1"

    pk = UnicodeAttribute(hash_key=True)
    scope_kind = UnicodeAttribute()
    cascade_id = UnicodeAttribute()
    accepted_at = InstantAttribute()
    state = UnicodeAttribute()


def bind_tables(settings: Settings) -> None:
    """Point every model at the configured tables, region and endpoint (called once per cold start)."""
    names = {
        TriggerRecord: settings.triggers_table,
        InvocationRecord: settings.invocations_table,
        IdempotencyRecord: settings.invocations_table,
        OpenRegisterRecord: settings.invocations_table,
        ShardMarkerRecord: settings.triggers_table,
        CascadeRecord: settings.triggers_table,
        ScopeTombstoneRecord: settings.triggers_table,
    }
    for model, table_name in names.items():
        meta: Any = model.Meta
        meta.table_name = table_name
        meta.region = settings.aws_region
        meta.host = settings.dynamodb_endpoint_url
        model._connection = None


def condition_held(write: Callable[[], object]) -> bool:
    """Run a conditional put or update; False when its condition did not hold (the item had moved on)."""
    try:
        write()
    except (PutError, UpdateError) as error:
        if error.cause_response_code == "ConditionalCheckFailedException":
            return False
        raise
    return True

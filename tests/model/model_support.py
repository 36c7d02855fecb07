"""Harness of the exactly-once model test: the real code on moto DynamoDB, with Step Functions, the agent,
the clock and the GSIs replaced by models the test steps by hand.

Every coupling to production internals lives here, so a change of the code under test (say the
execution input gains an `incarnation`) is adapted in one place:

* `FakeSfn` plays Step Functions: StartExecution records an execution (name → input), refuses a
  second one with the same name like Standard workflows (the same name and input while running
  returns the running one), StopExecution aborts it. Faults: throttling, "started but the response
  was lost", and an injected crash of the calling process.
* `Execution` plus `run_prepare` / `pass_wait` / `run_attempt` / `run_finalize` / `run_watcher` step an
  execution through statemachine/runner.asl.json by calling the real runner steps.
* `FakeAgent` records every agent call with the incarnation of the execution that made it.
* `LaggedIndexes` makes Query on the `due` and `open` GSIs answer from the tables as they were `lag`
  fake seconds ago (DynamoDB GSIs are eventually consistent; moto's are not).
* `SteppedDispatch` runs the real `Dispatcher.handle` of one due row in a thread that stops before each
  of its DynamoDB writes and its StartExecution, so the test interleaves two dispatchers at will and
  crashes one between any two steps.
"""

from __future__ import annotations

import copy
import json
import random
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest import mock

import boto3
import botocore.loaders
from botocore.exceptions import ClientError, ReadTimeoutError
from moto import mock_aws
from moto.moto_api._internal.models import moto_api_backend
from pynamodb.connection.base import Connection
from sundial.adapters.agent_http import AgentRequest, AgentResult, AttemptOutcome, classify_status
from sundial.deps import Deps
from sundial.domain.instants import parse_instant
from sundial.domain.naming import scheduled_execution_name
from sundial.services import dispatcher, runner
from sundial.services.dispatcher import START_BACKOFF, Backoff, Dispatcher, TickReport
from sundial.settings import Settings
from sundial.store import triggers as trigger_store
from sundial.store.dispatch import DueRow, DynamoDispatchStore, PageKey
from sundial.store.records import InvocationRecord, TriggerRecord, trigger_pk

from sundial_local.template import create_tables
from tests.conftest import ACCOUNT, MOTO_RECORDING_ONLY, REGION, FakeClock, make_settings

TENANT = "acme"
STATE_MACHINE_ARN = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:sundial-runner"
LAG_TRIGGERS = "lagged-triggers"
LAG_INVOCATIONS = "lagged-invocations"
LAGGED_INDEXES = frozenset({"due", "open"})
WRITE_OPERATIONS = frozenset({"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"})


class InjectedCrash(BaseException):
    """The calling process dies here: a BaseException, so no `except Exception` of the code under test swallows it."""


def no_sleep(_seconds: float) -> None:
    """Backoff pauses are not waited out: the model's time is the fake clock."""


@dataclass
class NoSleepBackoff(Backoff):
    """The code's throttling backoff without real pauses (wherever it builds a `Backoff()` of its own)."""

    sleep: Callable[[float], None] = no_sleep


# --------------------------------------------------------------------------------------------------
# Step Functions


@dataclass
class Execution:
    """One recorded execution and where it stands in runner.asl.json."""

    arn: str
    name: str
    input_text: str
    input: dict[str, Any]
    started_at: datetime
    incarnation: str | None
    status: str = "RUNNING"  # RUNNING | SUCCEEDED | FAILED | ABORTED
    # prepare | wait | attempt | backoff | finalize | ended
    phase: str = "prepare"
    state: dict[str, Any] | None = None
    wait_until: datetime | None = None
    failure: dict[str, Any] | None = None
    error: str | None = None
    cause: str | None = None
    watcher_deliveries: int = 0

    @property
    def kind(self) -> str:
        return str(self.input["kind"])

    @property
    def trigger_id(self) -> str:
        return str(self.input["triggerId"])

    @property
    def invocation_id(self) -> str:
        return str(self.input["invocationId"])

    @property
    def scheduled_for(self) -> datetime:
        return parse_instant(self.input["scheduledFor"])

    @property
    def schedule_version(self) -> int | None:
        version = self.input.get("scheduleVersion")
        return int(version) if version is not None else None

    def ready(self, now: datetime) -> bool:
        """Whether the state machine would take a step now."""
        if self.status != "RUNNING":
            return False
        if self.phase in ("wait", "backoff"):
            assert self.wait_until is not None
            return now >= self.wait_until
        return self.phase in ("prepare", "attempt", "finalize")

    def end(self, status: str, error: str | None = None, cause: str | None = None) -> None:
        self.status, self.phase, self.error, self.cause = status, "ended", error, cause


@dataclass
class SfnFault:
    """StartExecution fails for the next `remaining` calls, or (remaining None) until the fake clock reaches `until`.

    A fault "for a while" is measured in fake time, not calls: how many calls a backoff makes within
    its budget depends on random jitter and real time, and replays must stay deterministic.
    """

    kind: str  # throttle | lost | crash
    remaining: int | None = 1
    until: datetime | None = None


class FakeSfn:
    """The Step Functions API the code calls, with real botocore exception classes."""

    def __init__(self, exceptions: Any, clock: FakeClock, incarnation_of: Callable[[dict[str, Any], str], str | None]):
        self.exceptions = exceptions
        self.clock = clock
        self.incarnation_of = incarnation_of
        self.executions: dict[str, Execution] = {}
        self.by_arn: dict[str, Execution] = {}
        self.fault: SfnFault | None = None
        self.calls = 0

    def _take_fault(self) -> str | None:
        fault = self.fault
        if fault is None:
            return None
        if fault.remaining is None:
            if fault.until is not None and self.clock() >= fault.until:
                self.fault = None
                return None
            return fault.kind
        fault.remaining -= 1
        if fault.remaining <= 0:
            self.fault = None
        return fault.kind

    def start_execution(self, *, stateMachineArn: str, name: str, input: str) -> dict[str, Any]:  # noqa: N803
        self.calls += 1
        fault = self._take_fault()
        if fault == "throttle":
            raise ClientError({"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}}, "StartExecution")
        if fault == "crash":
            raise InjectedCrash(f"before StartExecution {name}")
        arn = f"{stateMachineArn.replace(':stateMachine:', ':execution:')}:{name}"
        existing = self.executions.get(name)
        if existing is not None:
            if existing.status == "RUNNING" and existing.input_text == input:
                return {"executionArn": existing.arn, "startDate": existing.started_at}
            raise self.exceptions.ExecutionAlreadyExists(
                {"Error": {"Code": "ExecutionAlreadyExists", "Message": f"Execution Already Exists: '{arn}'"}},
                "StartExecution",
            )
        parsed = json.loads(input)
        execution = Execution(arn, name, input, parsed, self.clock(), self.incarnation_of(parsed, name))
        self.executions[name] = execution
        self.by_arn[arn] = execution
        if fault == "lost":
            raise ReadTimeoutError(endpoint_url="https://states.us-east-1.amazonaws.com/")
        return {"executionArn": arn, "startDate": execution.started_at}

    def stop_execution(self, *, executionArn: str, cause: str = "", error: str = "") -> dict[str, Any]:  # noqa: N803
        execution = self.by_arn.get(executionArn)
        if execution is None:
            raise self.exceptions.ExecutionDoesNotExist(
                {"Error": {"Code": "ExecutionDoesNotExist", "Message": "Execution Does Not Exist"}}, "StopExecution"
            )
        if execution.status == "RUNNING":
            execution.end("ABORTED", error or None, cause or None)
        return {"stopDate": self.clock()}

    def describe_execution(self, *, executionArn: str) -> dict[str, Any]:  # noqa: N803
        execution = self.by_arn.get(executionArn)
        if execution is None:
            raise self.exceptions.ExecutionDoesNotExist(
                {"Error": {"Code": "ExecutionDoesNotExist", "Message": "Execution Does Not Exist"}},
                "DescribeExecution",
            )
        return {
            "executionArn": execution.arn,
            "name": execution.name,
            "status": execution.status,
            "input": execution.input_text,
            "startDate": execution.started_at,
            "stateMachineArn": STATE_MACHINE_ARN,
        }


# --------------------------------------------------------------------------------------------------
# The agent


@dataclass(frozen=True)
class AgentCall:
    tenant_id: str
    trigger_id: str
    incarnation: str | None
    scheduled_for: str
    kind: str
    invocation_id: str
    attempt_number: int
    at: datetime
    crashed: bool


class FakeAgent:
    """Answers the reply the test chose for this attempt; records every call with its execution's incarnation."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.calls: list[AgentCall] = []
        self.execution: Execution | None = None
        self.status = 200
        self.crash = False
        self.on_call: Callable[[AgentRequest, Execution], None] = lambda _request, _execution: None

    def call(self, request: AgentRequest, timeout_seconds: float) -> AgentResult:
        execution = self.execution
        assert execution is not None, "agent called outside an Attempt step"
        self.on_call(request, execution)
        self.calls.append(
            AgentCall(
                request.tenant_id,
                request.trigger_id,
                execution.incarnation,
                request.scheduled_for,
                execution.kind,
                request.invocation_id,
                request.attempt_number,
                self.clock(),
                self.crash,
            )
        )
        if self.crash:
            raise InjectedCrash("during the agent call")
        outcome = classify_status(self.status)
        if outcome is AttemptOutcome.SUCCEEDED:
            return AgentResult(outcome, self.status, None, f"conv-{len(self.calls)}")
        return AgentResult(outcome, self.status, f"HTTP {self.status}")


# --------------------------------------------------------------------------------------------------
# Runner steps, as runner.asl.json sequences them


def run_prepare(deps: Deps, execution: Execution) -> None:
    event = runner.PrepareEvent.model_validate({"input": execution.input, "executionArn": execution.arn})
    state = runner.prepare(deps, event)
    execution.state = state.to_event()
    execution.phase = "wait"
    execution.wait_until = datetime.fromisoformat((state.starts_at or state.scheduled_for).replace("Z", "+00:00"))


def pass_wait(execution: Execution) -> None:
    execution.phase = "attempt"
    execution.wait_until = None


def task_failed(execution: Execution, retries_exhausted: bool, error: str = "Lambda.Unknown") -> None:
    """A Task's Lambda failed: the state machine retries the same Task, or its Catch sends the run to Finalize."""
    if retries_exhausted:
        execution.failure = {"Error": error, "Cause": json.dumps({"errorMessage": "injected Lambda failure"})}
        execution.phase = "finalize"


def run_attempt(deps: Deps, agent: FakeAgent, execution: Execution) -> str:
    """One Attempt Task; returns the outcome it routed on."""
    assert execution.state is not None
    agent.execution = execution
    try:
        state = runner.attempt(deps, agent, runner.RunState.model_validate(execution.state), rng=lambda: 0.5)
    finally:
        agent.execution = None
    execution.state = state.to_event()
    if state.outcome in ("retry", "waiting"):
        assert state.retry_delay_seconds is not None
        execution.phase = "backoff"
        execution.wait_until = deps.now() + timedelta(seconds=state.retry_delay_seconds)
    elif state.outcome == "failed":
        execution.end("FAILED", "AgentRunFailed", "The agent run failed; the invocation record holds every attempt.")
    else:
        execution.end("SUCCEEDED")
    return state.outcome


def run_finalize(deps: Deps, execution: Execution) -> None:
    base = execution.state if execution.state is not None else dict(execution.input)
    state = runner.RunState.model_validate({**base, "failure": execution.failure})
    runner.finalize(deps, state)
    cause = (execution.failure or {}).get("Cause")
    execution.end("FAILED", "SundialRunnerError", cause)


def run_watcher(deps: Deps, execution: Execution) -> None:
    """The EventBridge status-change event of an execution that ended FAILED or ABORTED, delivered to the watcher."""
    ended = runner.EndedExecution.model_validate(
        {
            "executionArn": execution.arn,
            "status": execution.status,
            "input": execution.input_text,
            "error": execution.error,
            "cause": execution.cause,
        }
    )
    runner.close_ended_execution(deps, ended)
    execution.watcher_deliveries += 1


# --------------------------------------------------------------------------------------------------
# GSI lag


class LaggedIndexes:
    """Answers Query on the `due` and `open` indexes from the tables as they stood `lag` seconds ago.

    A snapshot of both tables is taken whenever the clock is about to move on: the state at the end of
    a fake second. A query at time t reads the latest snapshot taken at or before t - lag, copied into
    shadow tables of the same definition, so moto still evaluates the real key condition and projection.
    """

    def __init__(self, dynamodb: Any, settings: Settings, clock: FakeClock, lag: int) -> None:
        self.dynamodb = dynamodb
        self.clock = clock
        self.lag = lag
        self.tables = {settings.triggers_table: LAG_TRIGGERS, settings.invocations_table: LAG_INVOCATIONS}
        self.history: list[tuple[datetime, dict[str, list[dict[str, Any]]]]] = []
        self.loaded: int | None = None  # index in history of what the shadow tables hold; -1 = empty
        self.shadow_items: dict[str, dict[tuple[str, ...], dict[str, Any]]] = {
            shadow: {} for shadow in self.tables.values()
        }
        self.key_names: dict[str, list[str]] = {}
        self.writes = 0  # DynamoDB writes made by the code under test; unchanged means the tables are too
        self.snapshot_writes = -1

    def snapshot(self) -> None:
        if self.lag <= 0:
            return
        if self.history and self.snapshot_writes == self.writes:
            state = self.history[-1][1]  # nothing written since: the tables stand as they were
        else:
            state = {table: self._scan(table) for table in self.tables}
            self.snapshot_writes = self.writes
        if self.history and self.history[-1][0] == self.clock():
            self.history[-1] = (self.clock(), state)
            if self.loaded == len(self.history) - 1:
                self.loaded = None  # the shadow tables hold the state this one replaced
        else:
            self.history.append((self.clock(), state))

    def _scan(self, table: str) -> list[dict[str, Any]]:
        pages = self.dynamodb.get_paginator("scan").paginate(TableName=table, ConsistentRead=True)
        return [item for page in pages for item in page["Items"]]

    def route(self, operation: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        if operation in WRITE_OPERATIONS:
            self.writes += 1
        if self.lag <= 0 or operation != "Query" or kwargs.get("IndexName") not in LAGGED_INDEXES:
            return kwargs
        shadow = self.tables.get(kwargs.get("TableName", ""))
        if shadow is None:
            return kwargs
        as_of = self.clock() - timedelta(seconds=self.lag)
        chosen = -1
        for position, (moment, _state) in enumerate(self.history):
            if moment <= as_of:
                chosen = position
        self._load(chosen)
        return {**kwargs, "TableName": shadow}

    def _load(self, position: int) -> None:
        """Bring the shadow tables to snapshot `position`, writing only the items that differ."""
        if self.loaded == position:
            return
        for table, shadow in self.tables.items():
            names = self._key_names(shadow)
            target = {
                tuple(json.dumps(item[name], sort_keys=True) for name in names): item
                for item in (self.history[position][1][table] if position >= 0 else [])
            }
            held = self.shadow_items[shadow]
            for key in [key for key in held if key not in target]:
                item = held.pop(key)
                self.dynamodb.delete_item(TableName=shadow, Key={name: item[name] for name in names})
            for key, item in target.items():
                if held.get(key) != item:
                    self.dynamodb.put_item(TableName=shadow, Item=item)
                    held[key] = item
        self.loaded = position

    def _key_names(self, shadow: str) -> list[str]:
        if shadow not in self.key_names:
            schema = self.dynamodb.describe_table(TableName=shadow)["Table"]["KeySchema"]
            self.key_names[shadow] = [key["AttributeName"] for key in schema]
        return self.key_names[shadow]


@contextmanager
def lagged_queries(current: Callable[[], LaggedIndexes | None]) -> Iterator[None]:
    """Route pynamodb's GSI queries through the current example's `LaggedIndexes`."""
    original = Connection._make_api_call

    def routed(self: Connection, operation_name: str, operation_kwargs: dict[str, Any]) -> dict[str, Any]:
        lag = current()
        if lag is not None:
            operation_kwargs = lag.route(operation_name, operation_kwargs)
        result: dict[str, Any] = original(self, operation_name, operation_kwargs)
        return result

    with mock.patch.object(Connection, "_make_api_call", routed):
        yield


# --------------------------------------------------------------------------------------------------
# Stepped dispatchers


class Gate:
    """Lock-step between the test and one dispatcher thread: the thread stops before each step it takes."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._go = False
        self._crash = False
        self.waiting_at: str | None = None
        self.done = False
        self.error: BaseException | None = None

    def checkpoint(self, label: str) -> None:
        """In the dispatcher thread: wait for the test's go (or crash) before `label`."""
        with self._cond:
            self.waiting_at = label
            self._cond.notify_all()
            self._cond.wait_for(lambda: self._go or self._crash)
            self.waiting_at = None
            self._go = False
            if self._crash:
                raise InjectedCrash(f"before {label}")

    def finished(self, error: BaseException | None) -> None:
        with self._cond:
            self.done, self.error = True, error
            self._cond.notify_all()

    def settle(self) -> None:
        """In the test: wait until the thread stands at a checkpoint or has ended."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.waiting_at is not None or self.done, timeout=30):
                raise AssertionError("stepped dispatcher hung")

    def step(self, crash: bool = False) -> None:
        with self._cond:
            if self.done:
                return
            self._go, self._crash = True, crash
            self.waiting_at = None
            self._cond.notify_all()
        self.settle()


class GatedStore:
    """The real DynamoDB dispatch store, stopping before each of its conditional writes."""

    GATED = frozenset({"advance", "renew_lease", "release", "move_shard", "raise_marker", "lower_marker", "note_empty"})

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.inner = DynamoDispatchStore()

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)
        if name not in self.GATED:
            return method

        def gated(*args: Any, **kwargs: Any) -> Any:
            self.gate.checkpoint(name)
            return method(*args, **kwargs)

        return gated


class GatedSfn:
    def __init__(self, inner: FakeSfn, gate: Gate) -> None:
        self.inner = inner
        self.gate = gate
        self.exceptions = inner.exceptions

    def start_execution(self, **kwargs: Any) -> dict[str, Any]:
        self.gate.checkpoint("StartExecution")
        return self.inner.start_execution(**kwargs)


@dataclass
class SteppedDispatch:
    """`Dispatcher.handle` of one due row, as read now, in a thread the test moves a step at a time."""

    row: DueRow
    gate: Gate
    thread: threading.Thread
    label: str

    @classmethod
    def begin(cls, deps: Deps, sfn: FakeSfn, row: DueRow) -> SteppedDispatch:
        gate = Gate()
        gated_deps = copy.copy(deps)  # no __post_init__: the tables stay bound as they are
        gated_deps.__dict__["sfn"] = GatedSfn(sfn, gate)
        dispatcher = Dispatcher(
            gated_deps,
            store=GatedStore(gate),
            backoff=Backoff(sleep=no_sleep),
            start_backoff=replace(START_BACKOFF, sleep=no_sleep),
        )
        horizon = deps.now() + timedelta(seconds=deps.settings.lookahead_seconds)

        def work() -> None:
            error: BaseException | None = None
            try:
                dispatcher.handle(row, horizon, TickReport())
            except BaseException as caught:
                error = caught
            gate.finished(error)

        thread = threading.Thread(target=work, name="stepped-dispatch", daemon=True)
        stepped = cls(row, gate, thread, row.trigger_id)
        thread.start()
        gate.settle()
        return stepped

    @property
    def done(self) -> bool:
        return self.gate.done

    def step(self, crash: bool = False) -> None:
        self.gate.step(crash)
        if self.gate.done:
            self.thread.join(timeout=30)

    def finish(self) -> None:
        while not self.done:
            self.step()


def due_rows(deps: Deps) -> list[DueRow]:
    """What a dispatcher reads from the due index now (through the lag), every shard, up to its horizon."""
    until = deps.now() + timedelta(seconds=deps.settings.lookahead_seconds)
    store = DynamoDispatchStore()
    rows: list[DueRow] = []
    for shard in range(deps.settings.due_shard_count):
        cursor: PageKey | None = None
        while True:
            page, cursor = store.due_page(shard, until.strftime("%Y-%m-%dT%H:%M:%SZ"), cursor)
            rows += page
            if cursor is None:
                break
    return sorted(rows, key=lambda row: (row.due_at or "", row.pk))


def tick(deps: Deps) -> TickReport:
    return Dispatcher(
        deps, backoff=Backoff(sleep=no_sleep), start_backoff=replace(START_BACKOFF, sleep=no_sleep)
    ).tick()


# --------------------------------------------------------------------------------------------------
# Reading the stored state (the harness's only view of production storage)


@dataclass(frozen=True)
class StoredTrigger:
    incarnation: str
    schedule_version: int
    enabled: bool
    next_run_at: datetime | None
    missed_runs_skipped: int
    claim_name: str | None
    overlap_policy: str
    runs_started: int
    max_runs: int | None


def stored_trigger(trigger_id: str) -> StoredTrigger | None:
    found = trigger_store.find(TENANT, trigger_id)
    if found is None:
        return None
    return StoredTrigger(
        found.incarnation,
        int(found.schedule_version),
        bool(found.enabled),
        found.next_run_at,
        int(found.missed_runs_skipped or 0),
        found.claim_name,
        str(found.overlap_policy),
        int(found.runs_started or 0),
        int(found.max_runs) if found.max_runs is not None else None,
    )


@dataclass(frozen=True)
class StoredInvocation:
    trigger_id: str
    invocation_id: str
    kind: str
    status: str
    scheduled_for: datetime
    error: str | None
    attempts: int
    schedule_version: int | None
    incarnation: str | None  # when the record carries it
    started: bool  # it went from pending to running (a maxRuns trigger counts it)

    @property
    def missed_skip(self) -> bool:
        """Skipped by the missed-run rule (SPEC §4) at its first attempt, rather than by the overlap policy."""
        return self.status == "skipped" and (self.error or "").startswith("missed")


def stored_invocations() -> list[StoredInvocation]:
    found = []
    for record in InvocationRecord.scan(consistent_read=True):
        if not isinstance(record, InvocationRecord) or not getattr(record, "kind", None):
            continue
        found.append(
            StoredInvocation(
                record.trigger_id,
                record.invocation_id,
                record.kind,
                record.status,
                record.scheduled_for,
                record.error,
                len(record.attempts or []),
                int(record.schedule_version) if record.schedule_version is not None else None,
                getattr(record, "incarnation", None),
                record.started_at is not None,
            )
        )
    return found


def execution_prefix(trigger_id: str, incarnation: str) -> str:
    """The part of a scheduled execution name that names the trigger's incarnation (`s-<hash>-`)."""
    name = scheduled_execution_name(TENANT, trigger_id, incarnation, 1, datetime(2000, 1, 1, tzinfo=UTC))
    return name.split("-v1-")[0] + "-"


def scheduled_invocation_id(execution_name: str, scheduled_for: datetime) -> str:
    from sundial.domain.naming import invocation_id_for

    return invocation_id_for(execution_name, scheduled_for)


# --------------------------------------------------------------------------------------------------
# The world of one example


@dataclass
class World:
    """Fresh tables, fake Step Functions and agent, and Deps on the fake clock, for one example."""

    session: ModelSession
    clock: FakeClock
    shard_count: int
    lag: int
    sfn: FakeSfn = field(init=False)
    agent: FakeAgent = field(init=False)
    deps: Deps = field(init=False)
    lagged: LaggedIndexes = field(init=False)
    incarnation_of: Callable[[dict[str, Any], str], str | None] = lambda _input, _name: None
    _invocations: tuple[int, list[StoredInvocation]] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self.session.random.seed(0)
        moto_api_backend.reset()
        dynamodb = self.session.dynamodb
        settings = self.settings(self.shard_count)
        create_tables(dynamodb, settings.triggers_table, settings.invocations_table)
        create_tables(dynamodb, LAG_TRIGGERS, LAG_INVOCATIONS)
        self.sfn = FakeSfn(self.session.sfn_exceptions, self.clock, self._incarnation_of)
        self.agent = FakeAgent(self.clock)
        self.deps = Deps(settings, clock=self.clock, sfn_factory=lambda: self.sfn)  # type: ignore[arg-type,return-value]
        self.lagged = LaggedIndexes(dynamodb, settings, self.clock, self.lag)
        self.session.world = self

    @staticmethod
    def settings(shard_count: int) -> Settings:
        return make_settings(STATE_MACHINE_ARN, DUE_SHARD_COUNT=shard_count, DISPATCH_CONCURRENCY=1)

    def _incarnation_of(self, parsed: dict[str, Any], name: str) -> str | None:
        return self.incarnation_of(parsed, name)

    def reshard(self, shard_count: int) -> None:
        """Redeploy with another DUE_SHARD_COUNT: every function gets new Deps with the new setting."""
        self.shard_count = shard_count
        self.deps = Deps(self.settings(shard_count), clock=self.clock, sfn_factory=lambda: self.sfn)  # type: ignore[arg-type,return-value]

    def advance(self, seconds: int) -> None:
        self.lagged.snapshot()
        self.clock.advance(seconds)

    def invocations(self) -> list[StoredInvocation]:
        """Every stored invocation, rescanned only after the code under test has written something."""
        if self._invocations is None or self._invocations[0] != self.lagged.writes:
            self._invocations = (self.lagged.writes, stored_invocations())
        return self._invocations[1]

    def close(self) -> None:
        self.session.world = None


@dataclass
class ModelSession:
    """One moto session for all the examples of a test (clients are costly to build); a World per example."""

    dynamodb: Any
    sfn_exceptions: Any
    world: World | None = None
    # Ids the code draws from `secrets` (incarnations, run-now ids), reproducible so replays are exact.
    random: random.Random = field(default_factory=lambda: random.Random(0))

    def token_hex(self, nbytes: int | None = None) -> str:
        return self.random.getrandbits(8 * (nbytes or 32)).to_bytes(nbytes or 32, "big").hex()


@contextmanager
def shared_service_models() -> Iterator[None]:
    """botocore reads each service's JSON model, and lists its data folders, once per session, and every
    pynamodb connection (one per model and thread, remade by each Deps) opens a session: across
    thousands of examples that re-reading is a third of the time. The files never change during a run,
    so read and list each once."""
    loaded: dict[str, Any] = {}
    original = botocore.loaders.JSONFileLoader.load_file

    def load_once(self: botocore.loaders.JSONFileLoader, file_path: str) -> Any:
        if file_path not in loaded:
            loaded[file_path] = original(self, file_path)
        return loaded[file_path]

    listed: dict[tuple[Any, ...], list[str]] = {}
    original_list = botocore.loaders.Loader.list_available_services

    def list_once(self: botocore.loaders.Loader, type_name: str) -> list[str]:
        key = (tuple(self.search_paths), type_name)
        if key not in listed:
            listed[key] = original_list(self, type_name)
        return listed[key]

    with (
        mock.patch.object(botocore.loaders.JSONFileLoader, "load_file", load_once),
        mock.patch.object(botocore.loaders.Loader, "list_available_services", list_once),
    ):
        yield


@contextmanager
def model_session() -> Iterator[ModelSession]:
    """moto, the API handler on the current world's Deps, GSI lag, and no real sleeps in backoffs."""
    import api_handler

    with ExitStack() as stack:
        stack.enter_context(mock_aws(config=MOTO_RECORDING_ONLY))
        stack.enter_context(shared_service_models())
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        sfn = boto3.client("stepfunctions", region_name=REGION)
        session = ModelSession(dynamodb, sfn.exceptions)

        def current_deps() -> Deps:
            assert session.world is not None
            return session.world.deps

        stack.enter_context(mock.patch.object(api_handler, "deps", current_deps))
        stack.enter_context(mock.patch("secrets.token_hex", session.token_hex))
        for module in [module for name, module in sys.modules.items() if name.startswith("sundial.")]:
            if getattr(module, "Backoff", None) is Backoff:
                stack.enter_context(mock.patch.object(module, "Backoff", NoSleepBackoff))
        stack.enter_context(mock.patch.object(dispatcher, "START_BACKOFF", replace(START_BACKOFF, sleep=no_sleep)))
        stack.enter_context(lagged_queries(lambda: session.world.lagged if session.world is not None else None))
        yield session


def trigger_key(trigger_id: str) -> str:
    return trigger_pk(TENANT, trigger_id)


__all__ = [
    "TENANT",
    "AgentCall",
    "Execution",
    "FakeAgent",
    "FakeSfn",
    "InjectedCrash",
    "ModelSession",
    "SteppedDispatch",
    "StoredInvocation",
    "StoredTrigger",
    "TriggerRecord",
    "World",
    "due_rows",
    "execution_prefix",
    "model_session",
    "pass_wait",
    "run_attempt",
    "run_finalize",
    "run_prepare",
    "run_watcher",
    "scheduled_invocation_id",
    "stored_invocations",
    "stored_trigger",
    "task_failed",
    "tick",
]

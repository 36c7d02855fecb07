"""Helpers shared by the dispatcher tests: a moto stack, trigger seeding, execution accounting, fault injection.

Executions are only recorded (moto's `execute_state_machine: False`): the dispatcher's contract ends
at StartExecution, whose name uniqueness plain moto enforces like Step Functions does (same name and
input while running returns the running execution, anything else is ExecutionAlreadyExists). Running
the runner's state machine would tie these tests to the runner's code and spend a thread per execution.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from moto import mock_aws
from moto.core.botocore_stubber import BotocoreStubber
from sundial.adapters.aws_retry import Backoff
from sundial.contracts.api import AgentPath, TriggerCreate
from sundial.deps import Deps
from sundial.domain.auth import Principal
from sundial.services.dispatcher import START_BACKOFF, Dispatcher
from sundial.services.triggers import create_trigger
from sundial.settings import Settings
from sundial.store.dispatch import DispatchStore, DueRow, DynamoDispatchStore
from sundial.store.records import ShardMarkerRecord, TriggerRecord, due_shard_for, trigger_pk

from sundial_local.template import create_state_machine, create_tables
from tests.conftest import (
    MOTO_RECORDING_ONLY,
    REGION,
    RUNNER_FUNCTION_ARNS,
    FakeClock,
    create_cascade_state_machine,
    make_settings,
)

PATH = AgentPath("acme", "website", "reporter")
EDITOR = Principal("alice", "acme", frozenset({"editor"}))


@dataclass
class DispatchEnv:
    settings: Settings
    deps: Deps
    clock: FakeClock
    sfn: Any
    dynamodb: Any

    @property
    def state_machine_arn(self) -> str:
        return self.settings.state_machine_arn


@contextmanager
def one_request_at_a_time() -> Iterator[None]:
    """Serialise moto's request handling: DynamoDB applies a conditional write atomically and Step
    Functions checks a name atomically, while moto's in-memory backends are not thread-safe."""
    lock = threading.RLock()
    original = BotocoreStubber.__call__

    def serialised(self: BotocoreStubber, event_name: str, request: Any, **kwargs: Any) -> Any:
        with lock:
            return original(self, event_name, request, **kwargs)

    BotocoreStubber.__call__ = serialised  # type: ignore[method-assign]
    try:
        yield
    finally:
        BotocoreStubber.__call__ = original  # type: ignore[method-assign]


@contextmanager
def dispatch_env(clock: FakeClock, **overrides: Any) -> Iterator[DispatchEnv]:
    """Tables from template.yaml and the runner state machine from the ASL file, in recording-only moto.

    Four worker threads unless overridden: moto serialises requests anyway, and fewer threads
    spend less time fighting over the GIL.
    """
    overrides = {"DISPATCH_CONCURRENCY": 4, **overrides}
    with mock_aws(config=MOTO_RECORDING_ONLY), one_request_at_a_time():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        sfn = boto3.client("stepfunctions", region_name=REGION)
        settings = make_settings("", **overrides)
        create_tables(dynamodb, settings.triggers_table, settings.invocations_table)
        arn = create_state_machine(sfn, "sundial-runner", RUNNER_FUNCTION_ARNS)
        settings = make_settings(arn, **overrides)
        create_cascade_state_machine(sfn, settings)
        deps = Deps(settings, clock=clock, sfn_factory=lambda: sfn)
        yield DispatchEnv(settings, deps, clock, sfn, dynamodb)


class SleepRecorder:
    """Stands in for time.sleep in backoff: records the delays instead of waiting them out."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, seconds: float) -> None:
        with self._lock:
            self.delays.append(seconds)

    def monotonic(self) -> float:
        """Time as the backoff sees it: only the pauses pass (the calls against moto take none)."""
        with self._lock:
            return sum(self.delays)


def dispatcher(
    env: DispatchEnv,
    *,
    store: DispatchStore | None = None,
    deps: Deps | None = None,
    sleep: Callable[[float], None] | None = None,
) -> Dispatcher:
    """A dispatcher on the test stack whose backoff never really sleeps."""
    pause = sleep or SleepRecorder()
    monotonic = pause.monotonic if isinstance(pause, SleepRecorder) else time.monotonic
    return Dispatcher(
        deps or env.deps,
        store=store or DynamoDispatchStore(),
        backoff=Backoff(sleep=pause, monotonic=monotonic),
        start_backoff=replace(START_BACKOFF, sleep=pause, monotonic=monotonic),
    )


def create(env: DispatchEnv, name: str = "t", **fields: Any) -> str:
    """Create a trigger through the API's domain function (with its immediate claim); returns its id."""
    body = TriggerCreate.model_validate({"name": name, **fields})
    return create_trigger(env.deps, EDITOR, PATH, body).id


def seed(env: DispatchEnv, count: int, **fields: Any) -> list[str]:
    return [create(env, f"trigger {index}", **fields) for index in range(count)]


def stored(trigger_id: str) -> TriggerRecord:
    return TriggerRecord.get(trigger_pk(PATH.tenant_id, trigger_id), consistent_read=True)


def executions(env: DispatchEnv) -> list[dict[str, Any]]:
    """Every execution started on the runner, with its name and parsed input."""
    found: list[dict[str, Any]] = []
    for page in env.sfn.get_paginator("list_executions").paginate(stateMachineArn=env.state_machine_arn):
        for execution in page["executions"]:
            described = env.sfn.describe_execution(executionArn=execution["executionArn"])
            found.append({"name": execution["name"], "input": json.loads(described["input"])})
    return found


def occurrences(env: DispatchEnv) -> Counter[tuple[str, str]]:
    """How many executions each (trigger, scheduledFor) has: exactly once means every count is 1."""
    return Counter((item["input"]["triggerId"], item["input"]["scheduledFor"]) for item in executions(env))


def assert_exactly_once(env: DispatchEnv, expected: set[tuple[str, str]]) -> None:
    counts = occurrences(env)
    doubled = {key: count for key, count in counts.items() if count > 1}
    assert not doubled, f"started more than once: {doubled}"
    assert set(counts) == expected, f"lost: {expected - set(counts)}; unexpected: {set(counts) - expected}"


def at(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def dynamodb_client() -> Any:
    """The botocore client pynamodb sends the dispatcher's trigger-item calls through."""
    return TriggerRecord._get_connection().connection.client


def dynamodb_clients() -> tuple[Any, ...]:
    """Every botocore client the dispatcher's DynamoDB calls go through (one per pynamodb model)."""
    return (dynamodb_client(), ShardMarkerRecord._get_connection().connection.client)


@dataclass
class CallCounter:
    """Counts AWS calls per operation via botocore's `before-call` event, across both clients."""

    calls: Counter[str]
    lock: threading.Lock

    def __call__(self, model: Any, **_: Any) -> None:
        with self.lock:
            self.calls[model.name] += 1


@contextmanager
def counting_calls(env: DispatchEnv) -> Iterator[Counter[str]]:
    counter = CallCounter(Counter(), threading.Lock())
    clients = (*dynamodb_clients(), env.sfn)
    for client in clients:
        client.meta.events.register("before-call.*.*", counter)
    try:
        yield counter.calls
    finally:
        for client in clients:
            client.meta.events.unregister("before-call.*.*", counter)


def error_response(code: str, status: int = 400) -> tuple[AWSResponse, dict[str, Any]]:
    """What botocore makes of an AWS error reply; returned from `before-call` it replaces the call."""
    http = AWSResponse("https://aws.invalid/", status, {}, None)  # type: ignore[arg-type]
    return http, {"Error": {"Code": code, "Message": f"injected {code}"}, "ResponseMetadata": {}}


@dataclass
class Throttler:
    """Answers the first `times` tries of every distinct request with a throttling error."""

    operations: frozenset[str]
    times: int
    seen: Counter[str]
    lock: threading.Lock
    throttled: int = 0

    def __call__(self, model: Any, params: dict[str, Any], **_: Any) -> Any:
        if model.name not in self.operations:
            return None
        key = f"{model.name}:{json.dumps(params, sort_keys=True, default=str)}"
        with self.lock:
            self.seen[key] += 1
            if self.seen[key] > self.times:
                return None
            self.throttled += 1
        return error_response("ThrottlingException")


@contextmanager
def throttling(env: DispatchEnv, operations: set[str], times: int = 2) -> Iterator[Throttler]:
    throttler = Throttler(frozenset(operations), times, Counter(), threading.Lock())
    clients = (dynamodb_client(), env.sfn)
    for client in clients:
        client.meta.events.register_first("before-call.*.*", throttler)
    try:
        yield throttler
    finally:
        for client in clients:
            client.meta.events.unregister("before-call.*.*", throttler)


def seed_many(env: DispatchEnv, count: int, **fields: Any) -> list[str]:
    """`count` triggers like one created through the API, cloned under new ids (quicker than creating each)."""
    template = stored(create(env, "trigger 0", **fields))
    trigger_ids = [template.trigger_id]
    with TriggerRecord.batch_write() as batch:
        for index in range(1, count):
            trigger_id = f"{template.trigger_id}-{index}"
            clone = TriggerRecord(trigger_pk(PATH.tenant_id, trigger_id), **template.attribute_values)
            clone.pk = trigger_pk(PATH.tenant_id, trigger_id)
            clone.trigger_id = trigger_id
            clone.name = f"trigger {index}"
            clone.agent_trigger = f"{PATH.agent_id}#{trigger_id}"
            if template.due_shard is not None:
                clone.due_shard = due_shard_for(PATH.tenant_id, trigger_id, env.settings.due_shard_count)
            batch.save(clone)
            trigger_ids.append(trigger_id)
    return trigger_ids


def due_rows(env: DispatchEnv) -> list[DueRow]:
    """Everything in the due index, every shard."""
    store = DynamoDispatchStore()
    return [row for shard in range(env.settings.due_shard_count) for row in store.due_page(shard, "~", None)[0]]

"""Drives the real runner state machine in moto: handlers in-process, waits recorded instead of slept.

* `recorded_waits()` replaces the interpreter's Wait-state wait and its Retry backoff sleep with
  recorders (a hook may act when a given Wait state is reached, e.g. cancel a run mid-backoff).
* `AgentServer` is a real HTTP server on 127.0.0.1 playing the agent runtime from a script.
* `runner_harness()` puts it together on a `Stack`: Lambda Tasks routed to runner_handler,
  the handler's deps and agent client pointed at the stack and the server.
* `status_change_event()` is the EventBridge event AWS sends when an execution ends (moto sends none),
  built from DescribeExecution, for the watcher.
"""

from __future__ import annotations

import json
import threading
import time
import types
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from unittest import mock

import pytest
from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl
from moto.stepfunctions.parser.asl.component.state.wait.wait_function.wait_function import WaitFunction
from sundial.adapters.agent_http import AgentClient
from sundial.domain.naming import scheduled_execution_name
from sundial.services.dispatcher import start_request
from sundial.store.dispatch import Claim, due_row
from sundial.store.records import InvocationRecord, TriggerRecord, invocation_partition, trigger_pk

from sundial_local.lambdas import routed_lambdas
from tests.conftest import BASE, RUNNER_FUNCTION_ARNS, ApiClient, Stack

TEST_TOKEN = "test-token-5f1c"
POLL_SECONDS = 0.01


@dataclass(frozen=True)
class WaitRecord:
    execution_arn: str
    state: str
    seconds: int


@dataclass
class RecordedWaits:
    """Every Wait state's duration and every Retry backoff, recorded rather than slept."""

    waits: list[WaitRecord] = field(default_factory=list)
    retry_sleeps: list[float] = field(default_factory=list)
    hooks: dict[str, Callable[[str], None]] = field(default_factory=dict)

    def seconds(self, execution_arn: str, state: str) -> list[int]:
        return [w.seconds for w in self.waits if w.execution_arn == execution_arn and w.state == state]


@contextmanager
def recorded_waits() -> Iterator[RecordedWaits]:
    recorded = RecordedWaits()

    def wait_interval(self: WaitFunction, env: Any, wait_seconds: int) -> None:
        context = env.states.context_object.context_object_data
        execution_arn, state = context["Execution"]["Id"], context["State"]["Name"]
        recorded.waits.append(WaitRecord(execution_arn, state, wait_seconds))
        hook = recorded.hooks.get(state)
        if hook is not None:
            hook(execution_arn)

    no_sleep = types.SimpleNamespace(sleep=recorded.retry_sleeps.append)
    with (
        mock.patch.object(WaitFunction, "_wait_interval", wait_interval),
        mock.patch.object(retrier_decl, "time", no_sleep),
    ):
        yield recorded


@dataclass
class Reply:
    """One scripted agent response: a status and JSON body, or no answer within `delay` seconds, or a dropped line.

    `action` runs while the request is in flight (e.g. a cancel that lands during the agent call).
    """

    status: int = 200
    body: Any = None
    delay: float = 0.0
    drop: bool = False
    action: Callable[[], None] | None = None


@dataclass(frozen=True)
class Received:
    headers: dict[str, str]
    body: dict[str, Any]


class AgentServer:
    """The agent runtime, played by http.server: answers POSTs from `script`, then 200s with fresh conversation ids."""

    def __init__(self) -> None:
        self.script: deque[Reply] = deque()
        self.received: list[Received] = []
        self.release = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = json.loads(self.rfile.read(length) or b"null")
                with server._lock:
                    server.received.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
                    count = len(server.received)
                    reply = (
                        server.script.popleft() if server.script else Reply(body={"conversationId": f"conv-{count}"})
                    )
                if reply.action is not None:
                    reply.action()
                if reply.delay:
                    server.release.wait(reply.delay)
                if reply.drop:
                    self.close_connection = True
                    return
                data = json.dumps(reply.body).encode() if reply.body is not None else b""
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: tests read `received` instead."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/runs"

    def then(self, *replies: Reply) -> AgentServer:
        self.script.extend(replies)
        return self

    def __enter__(self) -> AgentServer:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()


def wait_for_execution(sfn: Any, execution_arn: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll until the execution leaves RUNNING (the state machine's own waits are recorded, not slept)."""
    deadline = time.monotonic() + timeout
    while True:
        described: dict[str, Any] = sfn.describe_execution(executionArn=execution_arn)
        if described["status"] != "RUNNING":
            return described
        if time.monotonic() > deadline:
            raise AssertionError(f"execution {execution_arn} still running after {timeout}s")
        time.sleep(POLL_SECONDS)


def _epoch_millis(value: datetime | None) -> int | None:
    return int(value.timestamp() * 1000) if value is not None else None


def status_change_event(described: dict[str, Any]) -> dict[str, Any]:
    """The "Step Functions Execution Status Change" event of an ended execution, as EventBridge delivers it."""
    arn = str(described["executionArn"])
    region, account = arn.split(":")[3:5]
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "account": account,
        "time": described["stopDate"].astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [arn],
        "detail": {
            "executionArn": arn,
            "stateMachineArn": described["stateMachineArn"],
            "name": described["name"],
            "status": described["status"],
            "startDate": _epoch_millis(described["startDate"]),
            "stopDate": _epoch_millis(described["stopDate"]),
            "input": described["input"],
            "inputDetails": {"included": True},
            "output": described.get("output"),
            "outputDetails": {"included": True} if "output" in described else None,
            "error": described.get("error"),
            "cause": described.get("cause"),
        },
    }


def history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    return events


def state_transitions(events: list[dict[str, Any]]) -> int:
    """Billed state transitions: one per state entered."""
    return sum(1 for event in events if event["type"].endswith("StateEntered"))


def entered_states(events: list[dict[str, Any]]) -> list[str]:
    return [event["stateEnteredEventDetails"]["name"] for event in events if event["type"].endswith("StateEntered")]


def lambda_invocations(events: list[dict[str, Any]]) -> int:
    """Lambda invocations the Tasks made, each Retry included."""
    return sum(1 for event in events if event["type"] == "TaskScheduled")


@dataclass
class Run:
    execution_arn: str
    invocation_id: str
    tenant_id: str
    trigger_id: str
    incarnation: str
    described: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        return str(self.described["status"])

    def invocation(self) -> InvocationRecord:
        return InvocationRecord.get(
            invocation_partition(self.tenant_id, self.trigger_id, self.incarnation),
            self.invocation_id,
            consistent_read=True,
        )


@dataclass
class Harness:
    stack: Stack
    agent: AgentServer
    waits: RecordedWaits

    def start_scheduled(self, tenant_id: str, trigger_id: str, at: datetime, version: int | None = None) -> Run:
        """Start the occurrence's execution exactly as the dispatcher does after its claim."""
        return self.start_occurrence(
            TriggerRecord.get(trigger_pk(tenant_id, trigger_id), consistent_read=True), at, version
        )

    def start_occurrence(self, row: TriggerRecord, at: datetime, version: int | None = None) -> Run:
        version = int(row.schedule_version) if version is None else version
        claim = Claim(
            at, scheduled_execution_name(row.tenant_id, row.trigger_id, row.incarnation, version, at), version
        )
        request = start_request(due_row(row), claim, None)
        started = self.stack.sfn.start_execution(
            stateMachineArn=self.stack.settings.state_machine_arn, name=request.name, input=request.input
        )
        invocation_id = json.loads(request.input)["invocationId"]
        return Run(started["executionArn"], invocation_id, row.tenant_id, row.trigger_id, row.incarnation)

    def finish(self, run: Run) -> Run:
        run.described = wait_for_execution(self.stack.sfn, run.execution_arn)
        return run

    def run_scheduled(self, tenant_id: str, trigger_id: str, at: datetime, version: int | None = None) -> Run:
        self.stack.clock.set(at)
        return self.finish(self.start_scheduled(tenant_id, trigger_id, at, version))

    def events(self, run: Run) -> list[dict[str, Any]]:
        return history(self.stack.sfn, run.execution_arn)

    def stop_all(self) -> None:
        """Leave no execution running when moto goes away."""
        sfn = self.stack.sfn
        arn = self.stack.settings.state_machine_arn
        running = sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]
        for execution in running:
            sfn.stop_execution(executionArn=execution["executionArn"], cause="test teardown")
        for execution in running:
            wait_for_execution(sfn, execution["executionArn"])


@contextmanager
def runner_harness(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    import runner_handler

    with AgentServer() as agent, recorded_waits() as waits, routed_lambdas(RUNNER_FUNCTION_ARNS):
        monkeypatch.setattr(runner_handler, "deps", lambda: stack.deps)
        client = AgentClient(agent.url, lambda: TEST_TOKEN)
        monkeypatch.setattr(runner_handler, "agent", lambda: client)
        harness = Harness(stack, agent, waits)
        try:
            yield harness
        finally:
            harness.stop_all()


def create_trigger(api: ApiClient, **fields: Any) -> dict[str, Any]:
    """Create a trigger through the API (so the API's immediate claim runs too); returns its body."""
    created = api.request("POST", BASE, {"name": "Nightly report", **fields})
    assert created.status == 201, created.body
    body: dict[str, Any] = created.body
    return body


def trigger_of(api: ApiClient, trigger_id: str) -> dict[str, Any]:
    got = api.request("GET", f"{BASE}/{trigger_id}")
    assert got.status == 200, got.body
    body: dict[str, Any] = got.body
    return body

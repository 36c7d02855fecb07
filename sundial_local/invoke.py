"""`make invoke FN=… EVENT=…`: run one function on an event file, with no Docker and no AWS account.

The function runs in this process against a throwaway in-process moto (tables and the runner state
machine created from template.yaml). The runner samples in events/ refer to the sample trigger
and its 2026-11-27 occurrence, so before the call the tables get what the event needs:

* dispatch, runner-prepare: the trigger of events/api_create_trigger.json (created through the API,
  then given the incarnation the runner samples name, so they are runs of this very trigger);
* runner-attempt, runner-finalize, runner-watcher, runner-sweep: that trigger and its invocation
  (events/runner_prepare.json run through Prepare), so the attempt really calls the agent: the demo
  agent unless AGENT_RUN_URL is set;
* platform-events: the trigger, whose project, agent, branch and runAs user the
  events/platform_*.json samples delete; the cascade the event starts runs in the emulated
  cascade state machine until the call ends.

The runner functions run at the sample occurrence's instant (their clock is pinned to its
`scheduledFor`), so the sample is on time whenever it is replayed rather than a missed run.

`--empty` skips that. The function's result is printed as JSON; notes go to stderr.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import logging
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
from sundial.deps import Deps
from sundial.observability import logger
from sundial.settings import get_settings

from sundial_local.config import DEV_AGENT_TOKEN
from sundial_local.demo_agent import DemoAgent
from sundial_local.stack import (
    MOTO_CONFIG,
    TRIGGERS_TABLE,
    cascade_function_arns,
    create_resources,
    discard_unpublished_metrics,
    lambda_context,
    runner_function_arns,
    set_environment,
)
from sundial_local.template import ROOT, resource

FUNCTIONS = {
    "api": "ApiFunction",
    "dispatch": "DispatchFunction",
    "runner-prepare": "RunnerPrepareFunction",
    "runner-attempt": "RunnerAttemptFunction",
    "runner-finalize": "RunnerFinalizeFunction",
    "runner-watcher": "RunnerWatcherFunction",
    "runner-sweep": "RunnerSweepFunction",
    "platform-events": "PlatformEventsFunction",
}
SAMPLE_TRIGGER_EVENT = ROOT / "events" / "api_create_trigger.json"
SAMPLE_PREPARE_EVENT = ROOT / "events" / "runner_prepare.json"
NEEDS_TRIGGER = frozenset(
    {
        "dispatch",
        "runner-prepare",
        "runner-attempt",
        "runner-finalize",
        "runner-watcher",
        "runner-sweep",
        "platform-events",
    }
)
NEEDS_INVOCATION = frozenset({"runner-attempt", "runner-finalize", "runner-watcher", "runner-sweep"})
AT_SAMPLE_INSTANT = frozenset({"runner-prepare", "runner-attempt", "runner-finalize", "runner-watcher"})
EXECUTION_STOP_SECONDS = 10.0

Handler = Callable[[dict[str, Any], Any], Any]


class InvokeError(Exception):
    """Something the caller can fix: an unknown function, a missing event file, a failed seed step."""


class FunctionError(Exception):
    """The function raised: Lambda would answer with this error (`errorType`, `errorMessage`)."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error

    def payload(self) -> dict[str, str]:
        return {"errorType": type(self.error).__name__, "errorMessage": str(self.error)}


def note(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def handler_for(logical_id: str) -> Handler:
    """The template's `Handler` (`module.function`) of a function, imported fresh, as on a cold start."""
    module_name, _, attribute = resource(logical_id)["Properties"]["Handler"].rpartition(".")
    module = importlib.import_module(module_name)
    for value in vars(module).values():
        if callable(getattr(value, "cache_clear", None)):
            value.cache_clear()  # per-cold-start caches (deps, clients) from an earlier call
    handler: Handler = getattr(module, attribute)
    return handler


def call(function: str, event: dict[str, Any]) -> Any:
    logical_id = FUNCTIONS[function]
    handler = handler_for(logical_id)
    if function in AT_SAMPLE_INSTANT:
        pin_clock_to_sample(sys.modules[handler.__module__])
    try:
        return handler(event, lambda_context(logical_id))
    finally:
        discard_unpublished_metrics()


def pin_clock_to_sample(module: Any) -> None:
    """Build the function's deps with a clock that stands at the sample occurrence's instant."""
    scheduled_for = json.loads(SAMPLE_PREPARE_EVENT.read_text())["input"]["scheduledFor"]
    instant = datetime.fromisoformat(scheduled_for)
    module.deps = functools.lru_cache(maxsize=1)(lambda: Deps(get_settings(), clock=lambda: instant))


def adopt_sample_incarnation(dynamodb: Any, triggers_table: str) -> None:
    """Give the sample trigger the incarnation the runner samples carry (creation picks a random one)."""
    run = json.loads(SAMPLE_PREPARE_EVENT.read_text())["input"]
    dynamodb.update_item(
        TableName=triggers_table,
        Key={"pk": {"S": f"{run['tenantId']}#{run['triggerId']}"}},
        UpdateExpression="SET incarnation = :incarnation",
        ExpressionAttributeValues={":incarnation": {"S": run["incarnation"]}},
        ConditionExpression="attribute_exists(pk)",
    )


def seed(function: str) -> None:
    """Put in the tables what the sample events of `function` refer to."""
    if function in NEEDS_TRIGGER:
        created = call("api", json.loads(SAMPLE_TRIGGER_EVENT.read_text()))
        if created.get("statusCode") != 201:
            raise InvokeError(f"could not create the sample trigger: {created.get('body')}")
        adopt_sample_incarnation(boto3.client("dynamodb"), TRIGGERS_TABLE)
        note(f"seeded: the trigger of {SAMPLE_TRIGGER_EVENT.relative_to(ROOT)}")
    if function in NEEDS_INVOCATION:
        call("runner-prepare", json.loads(SAMPLE_PREPARE_EVENT.read_text()))
        note(f"seeded: the pending invocation of {SAMPLE_PREPARE_EVENT.relative_to(ROOT)}")


@contextmanager
def agent_url() -> Iterator[str]:
    """AGENT_RUN_URL when set, else a demo agent for the duration of the call."""
    configured = os.environ.get("AGENT_RUN_URL")
    if configured:
        yield configured
        return
    agent = DemoAgent()
    agent.start()
    try:
        yield agent.url
    finally:
        agent.stop()


def stop_started_executions(sfn: Any, *state_machine_arns: str) -> None:
    """An execution the call started (run-now, a due trigger, a cascade) ends with the call: stop it and say so."""
    running = [
        execution
        for arn in state_machine_arns
        for execution in sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING")["executions"]
    ]
    deadline = time.monotonic() + EXECUTION_STOP_SECONDS
    for execution in running:
        # moto's interpreter builds an execution's environment on its own thread, and a stop that comes
        # before it fails inside moto: wait until the execution has entered its first state.
        while time.monotonic() < deadline and len(_history(sfn, execution["executionArn"])) < 2:
            time.sleep(0.05)
        sfn.stop_execution(executionArn=execution["executionArn"], cause="sundial_local.invoke is done")
        note(f"stopped execution {execution['name']}, which the call started")
    for execution in running:
        while time.monotonic() < deadline:
            if sfn.describe_execution(executionArn=execution["executionArn"])["status"] != "RUNNING":
                break
            time.sleep(0.05)


def _history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = sfn.get_execution_history(executionArn=execution_arn, maxResults=2)["events"]
    return events


def invoke(function: str, event_path: Path, *, empty: bool = False) -> Any:
    """Run `function` on the event in `event_path` against fresh emulated tables; returns its result."""
    if function not in FUNCTIONS:
        raise InvokeError(f"unknown function {function!r}; use one of {', '.join(FUNCTIONS)}")
    try:
        event = json.loads(event_path.read_text())
    except (OSError, ValueError) as error:
        raise InvokeError(f"cannot read the event {event_path}: {error}") from None
    import boto3
    from moto import mock_aws

    from sundial_local.lambdas import routed_lambdas

    with ExitStack() as stack:
        stack.enter_context(mock_aws(config=MOTO_CONFIG))
        url = stack.enter_context(agent_url())
        token = os.environ.get("AGENT_RUN_TOKEN") or DEV_AGENT_TOKEN
        set_environment(moto_port=None, agent_run_url=url, agent_run_token=token)
        dynamodb, sfn = boto3.client("dynamodb"), boto3.client("stepfunctions")
        state_machine_arn, cascade_arn = create_resources(dynamodb, sfn)
        set_environment(
            moto_port=None,
            agent_run_url=url,
            agent_run_token=token,
            state_machine_arn=state_machine_arn,
            cascade_state_machine_arn=cascade_arn,
        )
        stack.enter_context(routed_lambdas({**runner_function_arns(), **cascade_function_arns()}))
        stack.callback(stop_started_executions, sfn, state_machine_arn, cascade_arn)
        if not empty:
            seed(function)
        try:
            return call(function, event)
        except Exception as error:
            raise FunctionError(error) from error


@contextmanager
def logs_to_stderr() -> Iterator[None]:
    """The functions' log lines (powertools' handlers write to stdout) go to stderr: stdout is the result."""
    handlers = [h for h in logging.getLogger(logger.name).handlers if isinstance(h, logging.StreamHandler)]
    previous = [handler.setStream(sys.stderr) for handler in handlers]
    try:
        yield
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            if stream is not None:
                handler.setStream(stream)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sundial_local.invoke",
        description="Run a Sundial function on an event file against throwaway emulated AWS (no Docker).",
    )
    parser.add_argument("function", choices=sorted(FUNCTIONS), metavar="FUNCTION", help=", ".join(FUNCTIONS))
    parser.add_argument("event", type=Path, help="an event file, e.g. events/dispatch_tick.json")
    parser.add_argument("--empty", action="store_true", help="start from empty tables (no sample trigger)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    try:
        with logs_to_stderr():
            result = invoke(args.function, args.event, empty=args.empty)
    except InvokeError as error:
        note(f"error: {error}")
        return 1
    except FunctionError as failure:
        note("".join(traceback.format_exception(failure.error)))
        print(json.dumps(failure.payload(), indent=2))
        return 1
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

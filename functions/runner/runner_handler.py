"""Runner Lambdas: the Prepare, Attempt and Finalize Tasks of statemachine/runner.asl.json, the watcher, the sweep.

Each Task handler parses the state it is given, runs one step of `sundial.services.runner` and returns the
whole next state (the Task's OutputPath is `$.Payload`). An exception here fails the Task: the state
machine retries it, then its Catch sends the run to Finalize, which records it as failed.

The watcher is not part of the state machine: an EventBridge rule sends it the status change of
every runner execution that ended FAILED, TIMED_OUT or ABORTED, and it closes an invocation that
the execution left open. The sweep runs on a schedule and closes what a lost status event left open.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from sundial.adapters.agent_http import AgentClient
from sundial.contracts.events import EventBridgeEvent
from sundial.deps import Deps
from sundial.observability import entry_point, metrics
from sundial.services import runner, sweep
from sundial.settings import get_settings

# Metric counted for each outcome an Attempt step routes on.
METRIC_BY_OUTCOME = {
    "retry": "RunRetries",
    "waiting": "RunsWaitingForOverlap",
    "completed": "RunsCompleted",
    "failed": "RunsFailed",
    "cancelled": "RunsCancelled",
    "skipped": "RunsSkipped",
}


class ExecutionStatusChange(EventBridgeEvent):
    """The EventBridge event Step Functions sends when an execution's status changes."""

    detail: runner.EndedExecution


@lru_cache(maxsize=1)
def deps() -> Deps:
    return Deps(get_settings())


@lru_cache(maxsize=1)
def agent() -> AgentClient:
    """One client (connection pool, cached token) per process."""
    return deps().agent_client()


def _count(name: str, value: int = 1) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)


@entry_point(correlation_id_path="input.invocationId")
def prepare_handler(event: dict[str, Any], _context: LambdaContext) -> dict[str, Any]:
    state = runner.prepare(deps(), runner.PrepareEvent.model_validate(event))
    _count("RunsStarted")
    return state.to_event()


@entry_point(correlation_id_path="invocationId")
def attempt_handler(event: dict[str, Any], _context: LambdaContext) -> dict[str, Any]:
    state = runner.attempt(deps(), agent(), runner.RunState.model_validate(event))
    _count(METRIC_BY_OUTCOME[state.outcome])
    return state.to_event()


@entry_point(correlation_id_path="invocationId")
def finalize_handler(event: dict[str, Any], _context: LambdaContext) -> dict[str, Any]:
    state = runner.finalize(deps(), runner.RunState.model_validate(event))
    _count("RunsBroken")
    return state.to_event()


@entry_point(correlation_id_path="powertools_json(detail.input).invocationId")
def execution_ended_handler(event: dict[str, Any], _context: LambdaContext) -> dict[str, Any]:
    ended = ExecutionStatusChange.model_validate(event).detail
    closed = runner.close_ended_execution(deps(), ended)
    # Every delivery reports, zero included, so an alarm on runs left open sees a steady series.
    _count("RunsClosedByWatcher", int(closed.closed))
    return closed.to_event()


@entry_point(correlation_id_path=correlation_paths.EVENT_BRIDGE)
def sweep_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    """Every SweepSchedule: close the runs whose execution ended without the watcher hearing of it."""
    EventBridgeEvent.model_validate(event)
    report = sweep.sweep(deps(), remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000)
    # Every pass reports, zeros included, so alarms on them see a steady series.
    _count("RunsClosedBySweep", len(report.closed))
    _count("SweepErrors", report.errors)
    _count("SweepStoppedEarly", int(report.stopped_early))
    return {
        "lookedAt": report.looked_at,
        "closed": report.closed,
        "errors": report.errors,
        "stoppedEarly": report.stopped_early,
    }

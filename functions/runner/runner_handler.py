"""Runner Lambdas: the Prepare, Attempt and Finalize Tasks of statemachine/runner.asl.json.

Each parses the state it is given, runs one step of `sundial.runner` and returns the whole next
state (the Task's OutputPath is `$.Payload`). An exception here fails the Task, and the state
machine's Catch sends the run to Finalize, which records it as failed.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from sundial import runner
from sundial.agent_client import AgentClient, agent_client_for
from sundial.observability import entry_point, metrics
from sundial.runtime import Runtime
from sundial.settings import get_settings

# Metric counted for each outcome an Attempt step routes on.
METRIC_BY_OUTCOME = {
    "retry": "RunRetries",
    "completed": "RunsCompleted",
    "failed": "RunsFailed",
    "cancelled": "RunsCancelled",
    "skipped": "RunsSkipped",
}


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    return Runtime(get_settings())


@lru_cache(maxsize=1)
def agent() -> AgentClient:
    """One client (connection pool, cached token) per process."""
    return agent_client_for(runtime())


def _count(name: str) -> None:
    metrics.add_metric(name=name, unit=MetricUnit.Count, value=1)


@entry_point(correlation_id_path="input.invocationId")
def prepare_handler(event: dict[str, Any], _context: LambdaContext) -> dict[str, Any]:
    state = runner.prepare(runtime(), runner.PrepareEvent.model_validate(event))
    _count("RunsStarted")
    return state.to_event()


@entry_point(correlation_id_path="invocationId")
def attempt_handler(event: dict[str, Any], _context: LambdaContext) -> dict[str, Any]:
    state = runner.attempt(runtime(), agent(), runner.RunState.model_validate(event))
    _count(METRIC_BY_OUTCOME[state.outcome])
    return state.to_event()


@entry_point(correlation_id_path="invocationId")
def finalize_handler(event: dict[str, Any], _context: LambdaContext) -> dict[str, Any]:
    state = runner.finalize(runtime(), runner.RunState.model_validate(event))
    _count("RunsBroken")
    return state.to_event()

"""The dispatcher Lambda driven by the sample scheduled event in events/, and the EMF metrics it emits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import pytest
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from sundial_local.lambdas import LocalLambdaContext
from tests.conftest import EVENTS, START, FakeClock, function_arn_for, lambda_context
from tests.dispatch_support import DispatchEnv, dispatch_env, dispatcher, seed_many

TICK_EVENT = json.loads((EVENTS / "dispatch_tick.json").read_text())


@pytest.fixture
def env(clock: FakeClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[DispatchEnv]:
    import dispatch_handler

    clock.set(START - timedelta(minutes=10))
    with dispatch_env(clock) as built:
        monkeypatch.setattr(dispatch_handler, "dispatcher", lambda: dispatcher(built))
        yield built


class ShortOnTime(LocalLambdaContext):
    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 5_000


def context(stub: LocalLambdaContext | None = None) -> LambdaContext:
    return cast(LambdaContext, stub) if stub is not None else lambda_context()


def emitted_metrics(output: str) -> dict[str, Any]:
    """Metric name → value (a list when several) from the EMF documents powertools printed."""
    values: dict[str, Any] = {}
    for line in output.splitlines():
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        if "_aws" not in document:
            continue
        for directive in document["_aws"]["CloudWatchMetrics"]:
            for metric in directive["Metrics"]:
                value = document[metric["Name"]]
                values[metric["Name"]] = value[0] if isinstance(value, list) and len(value) == 1 else value
    return values


def test_the_scheduled_event_runs_a_tick_and_emits_its_metrics(
    env: DispatchEnv, capsys: pytest.CaptureFixture[str]
) -> None:
    import dispatch_handler

    seed_many(env, 3, cron_expression="0 15 * * *")
    env.clock.set(START - timedelta(seconds=100))

    result = dispatch_handler.lambda_handler(TICK_EVENT, context())

    assert result["due"] == result["dispatched"] == 3
    assert result["stopped_early"] is False
    metrics = emitted_metrics(capsys.readouterr().out)
    assert metrics["Due"] == metrics["Dispatched"] == 3
    for zero in ("AlreadyDispatched", "ClaimConflicts", "Redriven", "MissedSkipped", "Errors", "StoppedEarly"):
        assert metrics[zero] == 0
    assert metrics["DispatchLag"] == [-100.0, -100.0, -100.0]
    assert metrics["TickDuration"] >= 0


def test_the_lambdas_remaining_time_stops_claiming(env: DispatchEnv, capsys: pytest.CaptureFixture[str]) -> None:
    import dispatch_handler

    seed_many(env, 3, cron_expression="0 15 * * *")
    env.clock.set(START - timedelta(seconds=100))

    short = ShortOnTime("sundial-dispatch", function_arn_for("sundial-dispatch"))
    result = dispatch_handler.lambda_handler(TICK_EVENT, context(short))

    assert result["stopped_early"] is True
    assert result.get("dispatched", 0) == 0
    metrics = emitted_metrics(capsys.readouterr().out)
    assert (metrics["StoppedEarly"], metrics["Dispatched"]) == (1, 0)


def test_an_event_that_is_not_a_scheduled_event_is_refused(env: DispatchEnv) -> None:
    import dispatch_handler

    with pytest.raises(ValidationError):
        dispatch_handler.lambda_handler({"hello": "world"}, context())


def test_the_deployed_dispatchers_step_functions_client_makes_one_http_attempt_per_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its Backoff counts every attempt against the claim's lease (SPEC §5): the SDK must not retry inside it."""
    import dispatch_handler

    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    dispatch_handler.dispatcher.cache_clear()
    try:
        client = dispatch_handler.dispatcher().deps.sfn
        config: Any = client.meta.config
        assert (config.retries or {}).get("total_max_attempts") == 1
        assert (config.connect_timeout, config.read_timeout) == (3, 10)
        assert config.max_pool_connections == dispatch_handler.get_settings().dispatch_concurrency + 2
    finally:
        dispatch_handler.dispatcher.cache_clear()

"""Dispatcher Lambda: one tick per EventBridge scheduled event (rate(1 minute)), reported as EMF metrics."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any, cast

from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from botocore.config import Config
from sundial.contracts.events import EventBridgeEvent
from sundial.deps import SFN_CLIENT_CONFIG, Deps, aws_client
from sundial.observability import entry_point, logger, metrics
from sundial.services.dispatcher import Dispatcher, TickReport
from sundial.settings import Settings, get_settings
from sundial.store.records import TriggerRecord

if TYPE_CHECKING:
    from mypy_boto3_stepfunctions import SFNClient

COUNT_METRICS = {
    "due": "Due",
    "dispatched": "Dispatched",
    "already_dispatched": "AlreadyDispatched",
    "claim_conflicts": "ClaimConflicts",
    "redriven": "Redriven",
    "missed_skipped": "MissedSkipped",
    "in_flight": "InFlight",
    "throttle_retries": "ThrottleRetries",
    "errors": "Errors",
    "claimed_ahead": "ClaimedAhead",
}


def _pool_size(settings: Settings) -> int:
    """One HTTP connection per worker thread (and the query thread), so no call waits for a connection."""
    return settings.dispatch_concurrency + 2


@lru_cache(maxsize=1)
def dispatcher() -> Dispatcher:
    settings = get_settings()
    meta: Any = TriggerRecord.Meta
    meta.max_pool_connections = _pool_size(settings)  # read when Deps binds the tables

    def sfn_client() -> SFNClient:
        # One HTTP attempt per call, as everywhere: the dispatcher's own Backoff counts every attempt.
        config = SFN_CLIENT_CONFIG.merge(Config(max_pool_connections=_pool_size(settings)))
        return cast("SFNClient", aws_client("stepfunctions", config))

    return Dispatcher(Deps(settings, sfn_factory=sfn_client))


def emit_metrics(report: TickReport) -> None:
    """Every counter on every tick (zeros included, so alarms see a steady series), then duration and lags."""
    for key, name in COUNT_METRICS.items():
        metrics.add_metric(name=name, unit=MetricUnit.Count, value=report.counts[key])
    metrics.add_metric(name="StoppedEarly", unit=MetricUnit.Count, value=int(report.stopped_early))
    metrics.add_metric(name="TickDuration", unit=MetricUnit.Milliseconds, value=report.duration_seconds * 1000)
    for lag in report.lags_seconds:
        metrics.add_metric(name="DispatchLag", unit=MetricUnit.Seconds, value=lag)


@entry_point(correlation_id_path=correlation_paths.EVENT_BRIDGE)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    tick = EventBridgeEvent.model_validate(event)
    report = dispatcher().tick(remaining_seconds=lambda: context.get_remaining_time_in_millis() / 1000)
    emit_metrics(report)
    summary = report.summary()
    logger.info("dispatch tick done", extra={"tick": summary, "scheduled_time": tick.time.isoformat()})
    return summary

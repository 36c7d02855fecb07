"""Cascade Lambdas (SPEC §7): the Page Task of statemachine/cascade.asl.json, and the platform's
lifecycle events, which start cascades as the admin routes do.

The Page Task works pages of one cascade while its invocation has time left and returns the next
step (`done`, or `waitSeconds` before the next pass); an exception fails the Task, which the state
machine retries: a page is safe to run again.

A platform event that cannot start a cascade (a bad detail, another schema version, its id reused
for another scope) fails the invocation; after Lambda's retries it waits in the dead-letter queue.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from sundial.contracts.platform_events import PlatformEvent
from sundial.deps import Deps
from sundial.observability import entry_point, logger, metrics
from sundial.services import cascades
from sundial.settings import get_settings


@lru_cache(maxsize=1)
def deps() -> Deps:
    return Deps(get_settings())


@entry_point(correlation_id_path="cascadeId")
def page_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    step = cascades.page(
        deps(),
        cascades.CascadeStep.model_validate(event),
        time_left=lambda: context.get_remaining_time_in_millis() / 1000,
    )
    metrics.add_metric(name="CascadesCompleted", unit=MetricUnit.Count, value=int(step.done))
    return step.to_event()


@entry_point(correlation_id_path="id")
def platform_event_handler(event: dict[str, Any], _context: LambdaContext) -> dict[str, Any]:
    scope, event_id = PlatformEvent.parse(event)
    accepted = cascades.on_platform_event(deps(), scope, event_id)
    logger.info("cascade %s accepted: %s was deleted", accepted.cascade_id, scope.describe())
    metrics.add_metric(name="PlatformEventsAccepted", unit=MetricUnit.Count, value=1)
    return accepted.model_dump(mode="json", by_alias=True)

"""Cascade Lambda: the Page Task of statemachine/cascade.asl.json (SPEC §7).

It works pages of one cascade while its invocation has time left and returns the next step
(`done`, or `waitSeconds` before the next pass); an exception fails the Task, which the state
machine retries: a page is safe to run again.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from sundial.deps import Deps
from sundial.observability import entry_point, metrics
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

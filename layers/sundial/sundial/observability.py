"""Logger, Tracer and Metrics, and the one decorator stack every Lambda entry point wears."""

from __future__ import annotations

from collections.abc import Callable
from functools import cache, wraps
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="sundial")
metrics = Metrics(namespace="Sundial", service="sundial")

Handler = TypeVar("Handler", bound=Callable[..., Any])


@cache
def tracer() -> Tracer:
    """Built by the first traced call, not at import: building a Tracer imports and patches the X-Ray SDK,
    which a process that never handles an event (a test, a tool, the cold-start bench) need not pay."""
    return Tracer(service="sundial")


def _traced_on_first_call(handler: Handler) -> Handler:
    """`tracer().capture_lambda_handler(handler)`, wrapped on the handler's first call."""

    @cache
    def traced() -> Callable[..., Any]:
        return tracer().capture_lambda_handler(handler)

    @wraps(handler)
    def trace(event: Any, context: Any) -> Any:
        return traced()(event, context)

    wrapped: Any = trace
    return wrapped


def entry_point(correlation_id_path: str | None = None) -> Callable[[Handler], Handler]:
    """Logger context (with a correlation id taken from the event), EMF metrics and X-Ray tracing."""

    def decorate(handler: Handler) -> Handler:
        traced = _traced_on_first_call(handler)
        measured = metrics.log_metrics(traced)
        logged: Any = logger.inject_lambda_context(measured, correlation_id_path=correlation_id_path, clear_state=True)
        return logged

    return decorate

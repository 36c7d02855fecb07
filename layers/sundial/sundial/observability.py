"""Logger, Tracer and Metrics, and the one decorator stack every Lambda entry point wears."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from aws_lambda_powertools import Logger, Metrics, Tracer

logger = Logger(service="sundial")
tracer = Tracer(service="sundial")
metrics = Metrics(namespace="Sundial", service="sundial")

Handler = TypeVar("Handler", bound=Callable[..., Any])


def entry_point(correlation_id_path: str | None = None) -> Callable[[Handler], Handler]:
    """Logger context (with a correlation id taken from the event), EMF metrics and X-Ray tracing."""

    def decorate(handler: Handler) -> Handler:
        traced = tracer.capture_lambda_handler(handler)
        measured = metrics.log_metrics(traced)
        logged: Any = logger.inject_lambda_context(measured, correlation_id_path=correlation_id_path, clear_state=True)
        return logged

    return decorate

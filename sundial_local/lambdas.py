"""Runs the state machines' Lambda Tasks in-process: moto's Step Functions interpreter calls the real handlers.

moto sends every Lambda Task to `LambdaSimpleBackend.invoke`, which by default echoes its payload.
`routed_lambdas` replaces it for the duration of a `with` block: a call to one of the runner
functions (named by the ARNs the state machine was created with) imports the handler the
template names and calls it; an exception becomes a Lambda function error whose `errorType`
is the exception's class name, as in AWS, so the state machine's Retry and Catch see it.
"""

from __future__ import annotations

import importlib
import json
import traceback
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from moto.awslambda_simple.models import LambdaSimpleBackend

from sundial_local.template import state_machine_function_handlers

Handler = Callable[[Any, Any], Any]
FUNCTION_ERROR_HEADER = "x-amz-function-error"


@dataclass
class LocalLambdaContext:
    """The attributes of a Lambda context object that the handlers' decorators read."""

    function_name: str
    invoked_function_arn: str
    memory_limit_in_mb: int = 512
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    function_version: str = "$LATEST"
    log_group_name: str = "/aws/lambda/local"
    log_stream_name: str = "local"

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 900_000


def load_handler(spec: str) -> Handler:
    """`module.function` (a template's Handler property) → the function."""
    module_name, _, function_name = spec.rpartition(".")
    handler: Handler = getattr(importlib.import_module(module_name), function_name)
    return handler


def _function_name(name_or_arn: str) -> str:
    """`arn:aws:lambda:…:function:NAME[:qualifier]` or `NAME` → `NAME`."""
    if name_or_arn.startswith("arn:"):
        return name_or_arn.split(":")[6]
    return name_or_arn


def handler_routes(function_arns: dict[str, str]) -> dict[str, str]:
    """Function name → handler spec, for the state machines' functions created with `function_arns`.

    `function_arns` maps the template's DefinitionSubstitutions keys to the ARNs given to them.
    """
    return {
        _function_name(function_arns[key]): spec
        for key, spec in state_machine_function_handlers().items()
        if key in function_arns
    }


def invoke_handler(spec: str, name_or_arn: str, body: Any, response_headers: dict[str, str]) -> bytes:
    """Call the handler as Lambda would and return the response payload (or a function error)."""
    event = json.loads(body) if body else {}
    context = LocalLambdaContext(_function_name(name_or_arn), name_or_arn)
    try:
        result = load_handler(spec)(event, context)
    except Exception as error:
        response_headers[FUNCTION_ERROR_HEADER] = "Unhandled"
        failure = {
            "errorType": type(error).__name__,
            "errorMessage": str(error),
            "stackTrace": traceback.format_exception(error),
        }
        return json.dumps(failure).encode()
    return json.dumps(result).encode()


@contextmanager
def routed_lambdas(function_arns: dict[str, str]) -> Iterator[dict[str, str]]:
    """Route moto's Lambda invocations of the runner functions to their handlers; yields the routes."""
    routes = handler_routes(function_arns)
    original = LambdaSimpleBackend.invoke

    def invoke(
        self: LambdaSimpleBackend,
        function_name: str,
        qualifier: str | None,
        body: Any,
        headers: Any,
        response_headers: Any,
    ) -> str | bytes | None:
        spec = routes.get(_function_name(function_name))
        if spec is None:
            return original(self, function_name, qualifier, body, headers, response_headers)
        return invoke_handler(spec, function_name, body, response_headers)

    with mock.patch.object(LambdaSimpleBackend, "invoke", invoke):
        yield routes

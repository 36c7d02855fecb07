"""HTTP API Lambda: one resolver, its gate, its routers and its error mapping, wired together.

Request flow: the gate (`api_gate`, middleware) admits the caller, the route validates its input with
pydantic and calls one use case of the `sundial` package, and `api_errors` maps every error to its
status. The routes live in `api_routes_triggers` and `api_routes_invocations`.
"""

from __future__ import annotations

from functools import lru_cache
from http import HTTPStatus
from typing import Any

import api_errors
import api_openapi
import api_routes_invocations
import api_routes_triggers
from api_gate import gate
from api_json import parse_json_body
from api_request import DEPS
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from sundial.deps import Deps
from sundial.observability import entry_point, metrics
from sundial.settings import get_settings

app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=parse_json_body)
api_openapi.configure(app)
app.use(middlewares=[gate])
app.include_router(api_routes_triggers.router)
app.include_router(api_routes_invocations.router)
api_errors.register(app)


@lru_cache(maxsize=1)
def deps() -> Deps:
    return Deps(get_settings())


@lru_cache(maxsize=1)
def openapi_json() -> str:
    """The OpenAPI document of every route, as committed in docs/openapi.json."""
    return api_openapi.document_json(app)


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Response[str]:
    return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, openapi_json())


@entry_point(correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    app.append_context(**{DEPS: deps()})
    response = app.resolve(event, context)
    metrics.add_metric(name=f"Responses{str(response['statusCode'])[0]}xx", unit=MetricUnit.Count, value=1)
    return response

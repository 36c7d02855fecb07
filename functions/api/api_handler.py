"""HTTP API Lambda: one resolver, its gate, its routers and its error mapping, wired together.

Request flow: the gate (`api_gate`, middleware) admits the caller, the route validates its input with
pydantic and calls one use case of the `sundial` package, and `api_errors` maps every error to its
status. The routes live in `api_routes_triggers`, `api_routes_invocations` and `api_routes_cascades`; the
console's files in `api_routes_console`.
"""

from __future__ import annotations

from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from typing import Any

import api_errors
import api_openapi
import api_routes_cascades
import api_routes_console
import api_routes_invocations
import api_routes_triggers
from api_gate import gate
from api_json import parse_json_body
from api_request import DEPS
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi import swagger_ui
from aws_lambda_powertools.event_handler.openapi.swagger_ui import generate_swagger_html
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
app.include_router(api_routes_cascades.router)
app.include_router(api_routes_console.router)
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


# Swagger UI runs inline scripts, so no script policy; it still may not be framed or sniffed.
DOCS_HEADERS = {
    "Content-Security-Policy": "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@lru_cache(maxsize=1)
def docs_page() -> str:
    """Swagger UI over the committed document, its script and styles inlined from powertools (no CDN)."""
    bundled = Path(swagger_ui.__file__).parent
    script = (bundled / "swagger-ui-bundle.min.js").read_text(encoding="utf-8")
    styles = (bundled / "swagger-ui.min.css").read_text(encoding="utf-8")
    spec = openapi_json().replace("</", "<\\/")  # the document cannot end the inline script early
    return generate_swagger_html(spec, script, styles, "", None)


@app.get("/docs", include_in_schema=False)
def docs() -> Response[str]:
    """The page; `?format=json` (the URL Swagger UI shows for its document) is the document itself."""
    if app.current_event.get_query_string_value("format") == "json":
        return openapi_document()
    return Response(HTTPStatus.OK, "text/html; charset=utf-8", docs_page(), headers=DOCS_HEADERS)


@entry_point(correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    app.append_context(**{DEPS: deps()})
    response = app.resolve(event, context)
    metrics.add_metric(name=f"Responses{str(response['statusCode'])[0]}xx", unit=MetricUnit.Count, value=1)
    return response

"""The gate every request passes before anything is said about it, as the resolver's middleware.

In order: who is calling (401); the path's tenant and the role the method needs (403); then a body's
media type (415) and size (413). Only then are fields validated (400/422), so another tenant learns
nothing, not even what is wrong with its request. No route can forget it: it is registered once
with `app.use`, and the resolver's validation errors, which come before middleware, pass it too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from api_json import MAX_BODY_BYTES
from api_request import PRINCIPAL, deps_of
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import BaseRouter
from aws_lambda_powertools.utilities.data_classes import APIGatewayProxyEventV2
from sundial.domain.auth import Principal
from sundial.domain.errors import PayloadTooLargeError, UnsupportedMediaTypeError

# Read without a token (SPEC §3): the API's own description, its docs page and the console's files
# (the console signs in by itself). Every other route needs one.
PUBLIC_PATHS = frozenset({"/openapi.json", "/docs", "/console"})
PUBLIC_PREFIXES = ("/console/",)


def is_public(method: str, path: str) -> bool:
    return method == "GET" and (path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES))


def _path_tenant(path: str) -> str | None:
    """The tenant a `/tenants/{tenantId}/…` path addresses; None for the routes outside any tenant."""
    parts = path.split("/")
    return parts[2] if len(parts) > 2 and parts[1] == "tenants" else None


def _body_size(router: BaseRouter) -> int:
    body = router.current_event.body or ""
    return len(body.encode()) if not router.current_event.is_base64_encoded else len(body) * 3 // 4


def admit(router: BaseRouter) -> Principal:
    """401, then 403 (tenant, then role by method), then 415 and 413 for a body; returns the caller."""
    event: APIGatewayProxyEventV2 = router.current_event  # type: ignore[assignment]  # the HTTP API's event
    settings = deps_of(router).settings
    claims = event.request_context.authorizer.jwt_claim
    principal = Principal.from_claims(claims, settings.tenant_claim, settings.roles_claim)
    tenant = _path_tenant(event.path)
    if tenant is not None:
        principal.require_tenant(tenant, "viewer" if event.http_method == "GET" else "editor")
    if event.body:
        media_type = (event.headers.get("content-type") or "").split(";")[0].strip().lower()
        if media_type not in {"", content_types.APPLICATION_JSON}:
            raise UnsupportedMediaTypeError(f"Request body must be {content_types.APPLICATION_JSON}")
    if _body_size(router) > MAX_BODY_BYTES:
        raise PayloadTooLargeError(f"Request body is larger than {MAX_BODY_BYTES} bytes")
    return principal


def gate(app: Any, next_middleware: Callable[[Any], Response[Any]]) -> Response[Any]:
    """Middleware: admit the request, keep the caller in the context for the route, go on."""
    if not is_public(app.current_event.http_method, app.current_event.path):
        app.append_context(**{PRINCIPAL: admit(app)})
    return next_middleware(app)

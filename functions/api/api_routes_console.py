"""The web console (SPEC §10): three static files and its sign-in settings, served by the API function.

Served from the function itself rather than a bucket and CDN: the files are a few tens of KB, the
console then shares the API's origin (no CORS, relative URLs, one deployment), and a stack needs no
extra resources. The files are read once per process; their content security policy allows scripts
and styles from this origin only, and connections to this origin and the sign-in token endpoint.
"""

from __future__ import annotations

from functools import lru_cache
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from api_request import deps_of
from aws_lambda_powertools.event_handler import Response
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from sundial.domain.errors import NotFoundError
from sundial.settings import Settings

router = APIGatewayHttpRouter()

CONSOLE_DIR = Path(__file__).resolve().parent / "console"
PAGE = "index.html"
ASSETS = {
    "console.js": "text/javascript; charset=utf-8",
    "console.css": "text/css; charset=utf-8",
}
HTML = "text/html; charset=utf-8"


@lru_cache(maxsize=len(ASSETS) + 1)
def _file(name: str) -> str:
    return (CONSOLE_DIR / name).read_text(encoding="utf-8")


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else ""


def security_headers(settings: Settings) -> dict[str, str]:
    """The headers of every console response: nothing from elsewhere runs, nothing frames it."""
    connect = " ".join(filter(None, ["'self'", _origin(settings.console_oidc_token_url)]))
    policy = (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"connect-src {connect}; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def _static(name: str, content_type: str) -> Response[str]:
    headers = security_headers(deps_of(router).settings)
    return Response(HTTPStatus.OK, content_type, _file(name), headers=headers)


@router.get("/console", include_in_schema=False)
def console_page() -> Response[str]:
    return _static(PAGE, HTML)


@router.get("/console/config.json", include_in_schema=False)
def console_config() -> Response[dict[str, Any]]:
    """What the console needs to sign in: the claims it reads, and which sign-in methods this stack offers."""
    settings = deps_of(router).settings
    oidc = None
    if settings.console_oidc_authorize_url and settings.console_oidc_token_url and settings.console_oidc_client_id:
        oidc = {
            "authorizeUrl": settings.console_oidc_authorize_url,
            "tokenUrl": settings.console_oidc_token_url,
            "clientId": settings.console_oidc_client_id,
            "scope": settings.console_oidc_scope,
        }
    body = {
        "tenantClaim": settings.tenant_claim,
        "rolesClaim": settings.roles_claim,
        "devSignIn": settings.console_dev_sign_in,
        "oidc": oidc,
        "executionLinks": settings.console_execution_links,
    }
    return Response(HTTPStatus.OK, "application/json", body, headers=security_headers(settings))


@router.get("/console/<asset>", include_in_schema=False)
def console_asset(asset: str) -> Response[str]:
    content_type = ASSETS.get(asset)
    if content_type is None:
        raise NotFoundError(f"No console file {asset!r}")
    return _static(asset, content_type)

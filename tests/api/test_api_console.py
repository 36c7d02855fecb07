"""The console's files, its sign-in settings and the docs page: served without a token, from this origin only."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import api_handler
import api_routes_console
import pytest

from tests.api_support import assert_error
from tests.conftest import ApiClient, Stack, make_settings

COMMITTED = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"


def test_the_page_and_every_file_it_loads_are_served_without_a_token(api: ApiClient) -> None:
    page = api.request("GET", "/console", claims=None)
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    loaded = re.findall(r'(?:src|href)="(/console/[^"]+)"', page.body)
    assert sorted(loaded) == ["/console/console.css", "/console/console.js"]
    for path in loaded:
        response = api.request("GET", path, claims=None)
        assert response.status == 200, path
        assert response.body == (api_routes_console.CONSOLE_DIR / path.removeprefix("/console/")).read_text()


def test_every_file_of_the_console_folder_is_served_and_nothing_else() -> None:
    on_disk = {path.name for path in api_routes_console.CONSOLE_DIR.iterdir()}
    assert on_disk == {api_routes_console.PAGE, *api_routes_console.ASSETS}


@pytest.mark.parametrize(
    "path", ["/console/api_handler.py", "/console/..%2Fapi_handler.py", "/console/index.html", "/console/x.js"]
)
def test_a_file_that_is_not_the_consoles_is_not_found(api: ApiClient, path: str) -> None:
    assert_error(api.request("GET", path, claims=None), 404, "not_found")


def test_only_reading_the_console_needs_no_token(api: ApiClient) -> None:
    assert_error(api.request("POST", "/console", {}, claims=None), 401, "unauthorized")
    assert_error(api.request("DELETE", "/console/console.js", claims=None), 401, "unauthorized")


def test_nothing_from_another_origin_may_run_in_the_console(api: ApiClient) -> None:
    for path in ("/console", "/console/console.js", "/console/config.json"):
        headers = api.request("GET", path, claims=None).headers
        policy = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
        assert policy["default-src"] == "'none'"
        assert policy["script-src"] == "'self'"
        assert policy["connect-src"] == "'self'"
        assert policy["frame-ancestors"] == "'none'"
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_sign_in_settings_offer_only_a_pasted_token_by_default(api: ApiClient) -> None:
    config = api.request("GET", "/console/config.json", claims=None)
    assert config.status == 200
    assert config.body == {
        "tenantClaim": "tenant_id",
        "rolesClaim": "roles",
        "devSignIn": False,
        "oidc": None,
        "executionLinks": True,
    }


def test_sign_in_settings_offer_the_issuer_when_the_stack_names_it(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(
        stack.deps.settings.state_machine_arn,
        CONSOLE_OIDC_AUTHORIZE_URL="https://auth.example.com/oauth2/authorize",
        CONSOLE_OIDC_TOKEN_URL="https://auth.example.com/oauth2/token",
        CONSOLE_OIDC_CLIENT_ID="console-client",
        TENANT_CLAIM="custom:tenant",
    )
    deps = dataclasses.replace(stack.deps, settings=settings)
    monkeypatch.setattr(api_handler, "deps", lambda: deps)
    response = ApiClient().request("GET", "/console/config.json", claims=None)
    assert response.body["oidc"] == {
        "authorizeUrl": "https://auth.example.com/oauth2/authorize",
        "tokenUrl": "https://auth.example.com/oauth2/token",
        "clientId": "console-client",
        "scope": "openid",
    }
    assert response.body["tenantClaim"] == "custom:tenant"
    policy = response.headers["Content-Security-Policy"]
    assert "connect-src 'self' https://auth.example.com;" in policy


def test_the_docs_page_is_swagger_ui_over_the_committed_document_with_nothing_from_a_cdn(api: ApiClient) -> None:
    page = api.request("GET", "/docs", claims=None)
    assert page.status == 200
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert "SwaggerUIBundle(" in page.body
    assert page.headers["Content-Security-Policy"] == "frame-ancestors 'none'"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert not re.search(r"""(?:src|href)\s*=\s*['"]https?://""", page.body), "the page loads nothing from elsewhere"
    committed = json.loads(COMMITTED.read_text(encoding="utf-8"))
    embedded = re.search(r"spec: (\{.*?\n\})\s*,\s*presets:", page.body, re.DOTALL)
    assert embedded is not None
    assert json.loads(embedded.group(1).replace("<\\/", "</")) == committed
    document = api.request("GET", "/docs", query={"format": "json"}, claims=None)
    assert document.body == committed

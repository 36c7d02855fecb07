"""The local stack's API Gateway stand-in: token checks, claims as API Gateway passes them, the event it builds."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, cast

import jwt
import pytest
import urllib3
from sundial.auth import Principal

from sundial_local.gateway import ApiGateway, TokenRejectedError, build_event, claim_text, verify_bearer
from sundial_local.token import issue_token, parse_roles
from tests.conftest import BASE, EVENTS, LambdaContextStub, Stack

SECRET = "a-test-secret-that-is-long-enough-for-hs256"


def test_claims_are_strings_and_arrays_are_flattened_like_api_gateway() -> None:
    assert claim_text(["viewer", "editor"]) == "[viewer editor]"
    assert claim_text([]) == "[]"
    assert claim_text(1795683600) == "1795683600"
    assert claim_text(True) == "true"
    assert claim_text("acme") == "acme"


def test_a_valid_token_yields_its_claims_as_strings() -> None:
    token = issue_token(SECRET, tenant="acme", sub="alice", roles=["viewer", "editor"], now=time.time())
    claims = verify_bearer(f"Bearer {token}", SECRET)
    assert claims["sub"] == "alice"
    assert claims["tenant_id"] == "acme"
    assert claims["roles"] == "[viewer editor]"
    assert claims["exp"].isdigit()
    principal = Principal.from_claims(claims, "tenant_id", "roles")
    assert principal.roles == frozenset({"viewer", "editor"})
    assert verify_bearer(token, SECRET) == claims  # API Gateway also takes the bare token


@pytest.mark.parametrize(
    "header",
    [
        None,
        "",
        "Bearer ",
        "Bearer not-a-jwt",
        "Bearer " + jwt.encode({"sub": "a", "exp": time.time() + 60}, "another-secret-that-is-long-enough"),
        "Bearer " + jwt.encode({"sub": "a", "exp": time.time() - 1}, SECRET),
        "Bearer " + jwt.encode({"sub": "a"}, SECRET),
        "Bearer " + jwt.encode({"sub": "a", "exp": time.time() + 60}, "", algorithm="none"),
        "Bearer " + jwt.encode({"sub": "a", "exp": time.time() + 60}, SECRET * 2, algorithm="HS512"),
    ],
    ids=["absent", "empty", "no-token", "garbage", "wrong-key", "expired", "no-exp", "alg-none", "other-alg"],
)
def test_bad_tokens_are_refused(header: str | None) -> None:
    with pytest.raises(TokenRejectedError):
        verify_bearer(header, SECRET)


def test_roles_are_checked_when_a_token_is_made() -> None:
    assert parse_roles("viewer, editor") == ["viewer", "editor"]
    with pytest.raises(ValueError, match="owner"):
        parse_roles("owner")


def test_the_event_has_the_shape_of_the_sample() -> None:
    sample = json.loads((EVENTS / "api_create_trigger.json").read_text())
    event = build_event(
        method="POST",
        target=f"{BASE}?a=1&a=2",
        headers=[("Content-Type", "application/json"), ("Host", "127.0.0.1:3000"), ("Cookie", "x=1; y=2")],
        body=b'{"name": "n"}',
        claims={"sub": "alice"},
        source_ip="127.0.0.1",
    )
    assert set(sample) <= set(event)
    assert set(sample["requestContext"]) <= set(event["requestContext"])
    assert event["routeKey"] == "ANY /{proxy+}"
    assert event["pathParameters"] == {"proxy": BASE.lstrip("/")}
    assert event["queryStringParameters"] == {"a": "1,2"}
    assert event["rawQueryString"] == "a=1&a=2"
    assert event["cookies"] == ["x=1", "y=2"]
    assert "cookie" not in event["headers"]
    assert event["headers"]["content-type"] == "application/json"
    assert event["requestContext"]["authorizer"] == {"jwt": {"claims": {"sub": "alice"}, "scopes": None}}
    assert (event["body"], event["isBase64Encoded"]) == ('{"name": "n"}', False)


def test_the_openapi_route_is_public_and_binary_bodies_are_base64() -> None:
    public = build_event(method="GET", target="/openapi.json", headers=[], body=b"", claims=None, source_ip="::1")
    assert public["routeKey"] == "GET /openapi.json"
    assert "authorizer" not in public["requestContext"]
    assert "pathParameters" not in public
    assert "body" not in public
    binary = build_event(method="POST", target="/x", headers=[], body=b"\xff\xfe", claims=None, source_ip="::1")
    assert (binary["body"], binary["isBase64Encoded"]) == ("//4=", True)


def test_the_api_function_accepts_what_the_gateway_builds(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    import api_handler

    monkeypatch.setattr(api_handler, "runtime", lambda: stack.runtime)
    token = issue_token(SECRET, tenant="acme", sub="alice", roles=["editor"], now=time.time())

    def send(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        event = build_event(
            method=method,
            target=path,
            headers=[("Content-Type", "application/json")],
            body=json.dumps(body).encode() if body is not None else b"",
            claims=verify_bearer(f"Bearer {token}", SECRET),
            source_ip="127.0.0.1",
        )
        result: dict[str, Any] = api_handler.lambda_handler(event, cast(Any, LambdaContextStub()))
        return result

    created = send("POST", BASE, {"id": "daily", "name": "Daily", "cronExpression": "0 9 * * *"})
    assert created["statusCode"] == 201, created["body"]
    assert json.loads(created["body"])["createdBy"] == "alice"
    listed = send("GET", f"{BASE}?limit=1")
    assert listed["statusCode"] == 200
    assert [item["id"] for item in json.loads(listed["body"])["data"]] == ["daily"]
    elsewhere = send("GET", BASE.replace("/acme/", "/globex/"))
    assert elsewhere["statusCode"] == 403


@dataclass
class EchoGateway:
    """The gateway on a real socket in front of an integration that records events and echoes a response."""

    events: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False

    def integration(self, event: dict[str, Any]) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("the function broke")
        self.events.append(event)
        return {
            "statusCode": 202,
            "headers": {"Content-Type": "application/json"},
            "cookies": ["seen=1"],
            "body": json.dumps({"ok": True}),
            "isBase64Encoded": False,
        }


@pytest.fixture
def echo() -> Iterator[tuple[EchoGateway, str]]:
    recorder = EchoGateway()
    gateway = ApiGateway("127.0.0.1", 0, SECRET, recorder.integration)
    thread = threading.Thread(target=gateway.serve_forever, daemon=True)
    thread.start()
    yield recorder, f"http://127.0.0.1:{gateway.port}"
    gateway.stop_serving()
    gateway.close()


def test_the_gateway_refuses_before_calling_the_function(echo: tuple[EchoGateway, str]) -> None:
    recorder, url = echo
    response = urllib3.request("GET", f"{url}{BASE}")
    assert (response.status, response.json()) == (401, {"message": "Unauthorized"})
    public = urllib3.request("GET", f"{url}/openapi.json")
    assert public.status == 202
    assert [event["routeKey"] for event in recorder.events] == ["GET /openapi.json"]


def test_the_gateway_passes_chunked_bodies_and_writes_the_response(echo: tuple[EchoGateway, str]) -> None:
    recorder, url = echo
    token = issue_token(SECRET, tenant="acme", sub="alice", roles=["editor"])
    response = urllib3.request(
        "POST",
        f"{url}{BASE}",
        body=iter([b'{"name": ', b'"chunked"}']),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # an iterator body goes out with Transfer-Encoding: chunked
    assert (response.status, response.json()) == (202, {"ok": True})
    assert response.headers["Set-Cookie"] == "seen=1"
    (event,) = recorder.events
    assert event["headers"]["transfer-encoding"] == "chunked"
    assert event["body"] == '{"name": "chunked"}'
    assert event["requestContext"]["authorizer"]["jwt"]["claims"]["roles"] == "[editor]"


def test_a_failing_function_is_a_500_like_api_gateway(echo: tuple[EchoGateway, str]) -> None:
    recorder, url = echo
    recorder.fail = True
    response = urllib3.request("GET", f"{url}/openapi.json")
    assert (response.status, response.json()) == (500, {"message": "Internal Server Error"})

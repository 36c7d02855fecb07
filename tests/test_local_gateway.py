"""The local stack's API Gateway stand-in: token checks, claims as API Gateway passes them, the event it builds."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest
import urllib3
from sundial.domain.auth import Principal

from sundial_local.gateway import ApiGateway, TokenRejectedError, build_event, claim_text, verify_bearer
from sundial_local.token import issue_token, parse_roles
from tests.conftest import BASE, EVENTS, Stack, lambda_context

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

    monkeypatch.setattr(api_handler, "deps", lambda: stack.deps)
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
        result: dict[str, Any] = api_handler.lambda_handler(event, lambda_context())
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


@pytest.mark.parametrize(
    ("method", "target", "route_key", "path_parameters"),
    [
        ("GET", "/docs", "GET /docs", None),
        ("GET", "/console", "GET /console", None),
        ("GET", "/console/console.js?v=1", "GET /console/{asset}", {"asset": "console.js"}),
        ("GET", "/console/a/b.js", "ANY /{proxy+}", {"proxy": "console/a/b.js"}),
        ("GET", "/console/", "ANY /{proxy+}", {"proxy": "console/"}),
        ("POST", "/console", "ANY /{proxy+}", {"proxy": "console"}),
        ("GET", "/docs/x", "ANY /{proxy+}", {"proxy": "docs/x"}),
    ],
)
def test_the_console_and_docs_routes_are_public_as_in_the_template(
    method: str, target: str, route_key: str, path_parameters: dict[str, str] | None
) -> None:
    event = build_event(method=method, target=target, headers=[], body=b"", claims=None, source_ip="::1")
    assert event["routeKey"] == route_key
    assert event.get("pathParameters") == path_parameters


@pytest.fixture
def signing_gateway() -> Iterator[tuple[EchoGateway, str]]:
    recorder = EchoGateway()
    issue = lambda tenant, sub, roles: issue_token(SECRET, tenant=tenant, sub=sub, roles=roles)  # noqa: E731
    gateway = ApiGateway("127.0.0.1", 0, SECRET, recorder.integration, dev_tokens=issue)
    thread = threading.Thread(target=gateway.serve_forever, daemon=True)
    thread.start()
    yield recorder, f"http://127.0.0.1:{gateway.port}"
    gateway.stop_serving()
    gateway.close()


def test_the_development_sign_in_signs_a_token_the_gateway_then_accepts(
    signing_gateway: tuple[EchoGateway, str],
) -> None:
    recorder, url = signing_gateway
    asked = {"tenant": "acme", "sub": "carol", "roles": "viewer"}
    response = urllib3.request("POST", f"{url}/console/dev-token", json=asked)
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    token = response.json()["token"]
    assert verify_bearer(f"Bearer {token}", SECRET)["roles"] == "[viewer]"
    assert recorder.events == [], "the function is not involved"
    urllib3.request("GET", f"{url}{BASE}", headers={"Authorization": f"Bearer {token}"})
    assert recorder.events[0]["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] == "carol"


@pytest.mark.parametrize(
    "body",
    [b"{", b"[]", b'{"tenant": "acme", "roles": "editor"}', b'{"tenant": "acme", "sub": "a", "roles": "root"}'],
)
def test_the_development_sign_in_refuses_what_it_cannot_sign(
    signing_gateway: tuple[EchoGateway, str], body: bytes
) -> None:
    _, url = signing_gateway
    response = urllib3.request("POST", f"{url}/console/dev-token", body=body)
    assert response.status == 400
    assert response.json()["message"].startswith("No token:")


def test_without_development_sign_in_the_route_is_an_ordinary_authorized_one(echo: tuple[EchoGateway, str]) -> None:
    recorder, url = echo
    response = urllib3.request(
        "POST", f"{url}/console/dev-token", json={"tenant": "acme", "sub": "x", "roles": "admin"}
    )
    assert (response.status, response.json()) == (401, {"message": "Unauthorized"})
    assert recorder.events == []


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


@dataclass(frozen=True)
class Call:
    """One request and the answer it gets on its own: a status and what its body says (nothing, for a 204)."""

    method: str
    path: str
    token: str
    status: int
    says: tuple[str, ...] = ()
    body: dict[str, Any] | None = None

    def is_answered_by(self, status: int, text: bytes) -> bool:
        if status != self.status:
            return False
        if status == 204:
            return text == b""
        return all(part.encode() in text for part in self.says)


def _exchange(port: int, calls: list[Call]) -> list[tuple[int, bytes]]:
    """The calls one after another on one kept-alive connection; once it fails, the rest get status 0."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    answers: list[tuple[int, bytes]] = []
    try:
        for call in calls:
            payload = json.dumps(call.body).encode() if call.body is not None else None
            headers = {"Authorization": f"Bearer {call.token}", "Content-Type": "application/json"}
            connection.request(call.method, call.path, body=payload, headers=headers)
            response = connection.getresponse()
            answers.append((response.status, response.read()))
    except (OSError, http.client.HTTPException) as error:
        answers += [(0, repr(error).encode())] * (len(calls) - len(answers))
    finally:
        connection.close()
    return answers


def _send(port: int, call: Call) -> tuple[int, bytes]:
    (answer,) = _exchange(port, [call])
    return answer


def _serving(gateway: ApiGateway) -> threading.Thread:
    thread = threading.Thread(target=gateway.serve_forever, daemon=True)
    thread.start()
    return thread


@pytest.fixture
def api_gateway(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiGateway]:
    """The gateway in front of the real API function (one module-level resolver, as in the local stack)."""
    import api_handler

    monkeypatch.setattr(api_handler, "deps", lambda: stack.deps)

    def integration(event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = api_handler.lambda_handler(event, lambda_context())
        return result

    gateway = ApiGateway("127.0.0.1", 0, SECRET, integration)
    _serving(gateway)
    yield gateway
    gateway.stop_serving()
    gateway.close()


def test_concurrent_requests_get_their_own_answers(api_gateway: ApiGateway) -> None:
    """Reads, edits, deletes, missing triggers and another tenant's attempts, all at once: each request gets
    the answer it would get alone (the API function's resolver keeps one request's state at a time)."""
    editor = issue_token(SECRET, tenant="acme", sub="alice", roles=["editor"])
    stranger = issue_token(SECRET, tenant="globex", sub="mallory", roles=["admin"])
    count, rounds = 8, 4
    ids = [f"{kind}-{n}" for kind in ("read", "patch") for n in range(count)]
    ids += [f"gone-{n}-{r}" for n in range(count) for r in range(rounds)]
    for trigger in ids:
        body = {"id": trigger, "name": trigger, "cronExpression": "0 9 * * *"}
        status, text = _send(api_gateway.port, Call("POST", BASE, editor, 201, body=body))
        assert status == 201, text
    clients: list[list[Call]] = [
        calls
        for n in range(count)
        for calls in (
            [Call("GET", f"{BASE}/read-{n}", editor, 200, (f'"read-{n}"', '"upcomingRuns"'))] * rounds,
            [Call("PATCH", f"{BASE}/patch-{n}", editor, 200, (f'"patch-{n}"', f'"new {n}"'), {"name": f"new {n}"})]
            * rounds,
            [Call("DELETE", f"{BASE}/gone-{n}-{r}", editor, 204) for r in range(rounds)],
            [Call("GET", f"{BASE}/missing-{n}", editor, 404, ('"not_found"', f"'missing-{n}'"))] * rounds,
            [Call("GET", f"{BASE}/read-{n}", stranger, 403, ('"forbidden"',))] * rounds,
            [Call("DELETE", f"{BASE}/read-{n}", stranger, 403, ('"forbidden"',))] * rounds,
        )
    ]  # 48 clients let go at once, each with 4 requests on its own kept-alive connection
    start = threading.Barrier(len(clients))
    answers: dict[int, list[tuple[int, bytes]]] = {}

    def client(index: int, calls: list[Call]) -> None:
        start.wait()
        answers[index] = _exchange(api_gateway.port, calls)

    threads = [threading.Thread(target=client, args=(index, calls)) for index, calls in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    wrong = [
        f"{call.method} {call.path.rsplit('/', 1)[1]} ({call.status}) → {status} {text[:100]!r}"
        for index, calls in enumerate(clients)
        for call, (status, text) in zip(calls, answers.get(index, [(0, b"no answer")] * len(calls)), strict=True)
        if not call.is_answered_by(status, text)
    ]
    total = sum(len(calls) for calls in clients)
    assert not wrong, f"{len(wrong)} of {total} answers were not their own:\n" + "\n".join(wrong)
    after = [
        *(Call("GET", f"{BASE}/read-{n}", editor, 200, (f'"read-{n}"',)) for n in range(count)),
        *(
            Call("GET", f"{BASE}/gone-{n}-{r}", editor, 404, ('"not_found"',))
            for n in range(count)
            for r in range(rounds)
        ),
    ]  # the other tenant's deletes did nothing, the editor's all took effect
    settled = _exchange(api_gateway.port, after)
    assert [call for call, answer in zip(after, settled, strict=True) if not call.is_answered_by(*answer)] == []


def test_a_burst_of_fresh_connections_is_queued_not_dropped() -> None:
    """32 clients connecting before the gateway accepts any: the listen backlog holds them all.

    With a backlog of 5 the kernel drops (Linux) or resets (macOS) the rest; connecting while the server
    does not yet accept makes the burst deterministic instead of a race against the accept loop.
    """
    gateway = ApiGateway("127.0.0.1", 0, SECRET, EchoGateway().integration)
    clients = 32
    with ExitStack() as cleanup:
        cleanup.callback(gateway.close)
        sockets = [
            cleanup.enter_context(socket.create_connection(("127.0.0.1", gateway.port), timeout=2))
            for _ in range(clients)
        ]
        for client in sockets:
            client.sendall(b"GET /openapi.json HTTP/1.1\r\nHost: local\r\nConnection: close\r\n\r\n")
        _serving(gateway)
        cleanup.callback(gateway.stop_serving)
        answers = []
        for client in sockets:
            try:
                answers.append(client.makefile("rb").readline())
            except OSError as error:
                answers.append(type(error).__name__.encode())
        assert answers == [b"HTTP/1.1 202 Accepted\r\n"] * clients


def test_responses_go_out_in_one_write_without_nagle(
    echo: tuple[EchoGateway, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Head and body as two writes with Nagle on stall each kept-alive request ~40 ms (delayed ACK):
    each answer must be one write, on a socket with TCP_NODELAY."""
    seen: list[tuple[bool, list[bytes]]] = []  # per response: TCP_NODELAY, and the writes that carried it
    serve = ApiGateway.serve

    def spy(self: ApiGateway, request: Any) -> None:
        writes: list[bytes] = []
        seen.append((request.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0, writes))
        stream, request.wfile = request.wfile, WriteRecorder(request.wfile, writes)
        try:
            serve(self, request)
        finally:
            request.wfile = stream

    monkeypatch.setattr(ApiGateway, "serve", spy)
    _, url = echo
    connection = http.client.HTTPConnection("127.0.0.1", urlsplit(url).port, timeout=5)
    answers = [
        ("GET", "/openapi.json", 202, b'{"ok": true}'),
        ("GET", BASE, 401, b'{"message": "Unauthorized"}'),
        ("HEAD", BASE, 401, b""),
    ]  # one kept-alive connection
    for method, path, status, body in answers:
        connection.request(method, path)
        response = connection.getresponse()
        assert (response.status, response.read()) == (status, body)
    connection.close()
    assert [(nodelay, len(writes)) for nodelay, writes in seen] == [(True, 1)] * len(answers)
    for (_, (write,)), (_, _, status, body) in zip(seen, answers, strict=True):
        assert write.startswith(f"HTTP/1.1 {status} ".encode())
        assert write.endswith(b"\r\n\r\n" + body)


@dataclass
class WriteRecorder:
    """A response stream that remembers each write before passing it on."""

    target: Any
    writes: list[bytes]

    def write(self, data: bytes) -> int:
        self.writes.append(bytes(data))
        written: int = self.target.write(data)
        return written

    def flush(self) -> None:
        self.target.flush()


def test_the_token_command_works_outside_make(tmp_path: Path) -> None:
    """`python -m sundial_local.token --help`, as the README says, from any folder and without PYTHONPATH."""
    environment = {name: value for name, value in os.environ.items() if name != "PYTHONPATH"}
    shown = subprocess.run(
        [sys.executable, "-m", "sundial_local.token", "--help"],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert "--tenant" in shown.stdout

"""The agent call (SPEC §6) against a real HTTP server on 127.0.0.1: headers, body, outcomes, token, message."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import boto3
import pytest
import urllib3
from sundial.adapters import agent_http
from sundial.adapters.agent_http import (
    AgentClient,
    AgentRequest,
    AttemptOutcome,
    SecretToken,
    classify_status,
    token_source,
)
from sundial.deps import Deps
from sundial.domain.message import render_message
from sundial.settings import Settings

from tests.conftest import REGION, make_settings
from tests.runner_support import AgentServer, Reply

TOKEN = "s3cr3t-agent-token"
REQUEST = AgentRequest(
    tenant_id="acme",
    project_id="website",
    agent_id="reporter",
    ref="main",
    run_as_user_id="alice",
    trigger_id="nightly",
    invocation_id="20261126T160000Z-abc",
    scheduled_for="2026-11-26T16:00:00Z",
    attempt_number=2,
    timezone="Europe/Berlin",
    message="Summarise",
    payload={"days": 7},
)


@pytest.fixture
def server() -> Iterator[AgentServer]:
    with AgentServer() as running:
        yield running


@pytest.fixture
def client(server: AgentServer) -> AgentClient:
    return AgentClient(server.url, lambda: TOKEN)


def test_request_headers_and_body(server: AgentServer, client: AgentClient) -> None:
    result = client.call(REQUEST, timeout_seconds=5)

    assert result.outcome is AttemptOutcome.SUCCEEDED
    [received] = server.received
    assert received.headers["authorization"] == f"Bearer {TOKEN}"
    assert received.headers["idempotency-key"] == "20261126T160000Z-abc:2"
    assert received.headers["content-type"] == "application/json"
    assert received.body == {
        "tenantId": "acme",
        "projectId": "website",
        "agentId": "reporter",
        "ref": "main",
        "runAsUserId": "alice",
        "triggerId": "nightly",
        "invocationId": "20261126T160000Z-abc",
        "scheduledFor": "2026-11-26T16:00:00Z",
        "attemptNumber": 2,
        "timezone": "Europe/Berlin",
        "message": "Summarise",
        "payload": {"days": 7},
    }


@pytest.mark.parametrize(
    ("reply", "conversation_id"),
    [
        (Reply(200, {"conversationId": "conv-9"}), "conv-9"),
        (Reply(201, {"conversationId": "conv-10", "other": 1}), "conv-10"),
        (Reply(202), None),
        (Reply(200, {"conversationId": 42}), None),
        (Reply(200, ["not", "an", "object"]), None),
    ],
)
def test_success_records_the_conversation_id_when_there_is_one(
    server: AgentServer, client: AgentClient, reply: Reply, conversation_id: str | None
) -> None:
    server.then(reply)
    result = client.call(REQUEST, timeout_seconds=5)
    assert (result.outcome, result.http_status, result.conversation_id, result.error) == (
        AttemptOutcome.SUCCEEDED,
        reply.status,
        conversation_id,
        None,
    )


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504])
def test_retryable_statuses(server: AgentServer, client: AgentClient, status: int) -> None:
    server.then(Reply(status, {"message": "try later"}))
    result = client.call(REQUEST, timeout_seconds=5)
    assert (result.outcome, result.http_status) == (AttemptOutcome.RETRYABLE_ERROR, status)
    assert result.outcome.retryable
    assert result.error == f'HTTP {status}: {{"message": "try later"}}'


@pytest.mark.parametrize("status", [301, 400, 401, 403, 404, 409, 422])
def test_other_statuses_are_rejected_without_retry(server: AgentServer, client: AgentClient, status: int) -> None:
    server.then(Reply(status))
    result = client.call(REQUEST, timeout_seconds=5)
    assert (result.outcome, result.http_status, result.error) == (AttemptOutcome.REJECTED, status, f"HTTP {status}")
    assert not result.outcome.retryable


def test_long_error_bodies_are_cut(server: AgentServer, client: AgentClient) -> None:
    server.then(Reply(500, {"trace": "x" * 5000}))
    error = client.call(REQUEST, timeout_seconds=5).error
    assert error is not None
    assert len(error) < 350
    assert error.endswith("…")


def test_no_answer_within_the_timeout(server: AgentServer, client: AgentClient) -> None:
    server.then(Reply(200, delay=5))
    result = client.call(REQUEST, timeout_seconds=0.2)
    assert (result.outcome, result.http_status, result.error) == (
        AttemptOutcome.TIMEOUT,
        None,
        "no response within 0.2s",
    )
    assert result.outcome.retryable


def test_a_dropped_connection_is_retryable(server: AgentServer, client: AgentClient) -> None:
    server.then(Reply(drop=True))
    result = client.call(REQUEST, timeout_seconds=5)
    assert result.outcome is AttemptOutcome.RETRYABLE_ERROR
    assert result.error is not None
    assert result.error.startswith("network error")


def test_nothing_listening_is_retryable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = AgentClient(f"http://127.0.0.1:{port}/runs", lambda: TOKEN).call(REQUEST, timeout_seconds=2)
    assert (result.outcome, result.error) == (AttemptOutcome.RETRYABLE_ERROR, "network error: could not connect")


def test_the_token_is_never_logged_nor_recorded(
    server: AgentServer, client: AgentClient, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    server.then(Reply(401, {"error": "bad token"}), Reply(200, {"conversationId": "c"}))
    results = [client.call(REQUEST, timeout_seconds=5), client.call(REQUEST, timeout_seconds=5)]
    captured = capsys.readouterr()

    assert results[0].outcome is AttemptOutcome.REJECTED
    assert TOKEN not in caplog.text + captured.out + captured.err
    assert all(TOKEN not in repr(result) for result in results)
    assert len(server.received) == 2


class RawAgent:
    """A bare TCP agent on 127.0.0.1 for replies http.server cannot make: trickled, endless, echoing the request.

    `respond(agent, authorization)` writes the raw reply with `send`; `sent` counts the bytes that got out,
    and `cut_off` is set when the client closed the connection while the agent was still writing.
    """

    def __init__(self, respond: Callable[[RawAgent, str], None]) -> None:
        self.respond = respond
        self.sent = 0
        self.trickled = 0
        self.cut_off = threading.Event()
        self.done = threading.Event()
        self.stopping = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._thread = threading.Thread(target=self._serve, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._listener.getsockname()[1]}/runs"

    def send(self, data: bytes) -> None:
        self._connection.sendall(data)
        self.sent += len(data)

    def trickle(self, data: bytes, every: float) -> None:
        """One byte per `every` seconds, until done, the client hangs up or the test ends."""
        for byte in data:
            if self.stopping.wait(every):
                return
            self.send(bytes([byte]))
            self.trickled += 1

    def _serve(self) -> None:
        try:
            self._connection, _ = self._listener.accept()
        except OSError:
            return
        with self._connection:
            try:
                head = b""
                while b"\r\n\r\n" not in head:
                    head += self._connection.recv(4096)
                head, _, body = head.partition(b"\r\n\r\n")
                lines = head.decode().split("\r\n")[1:]
                headers = {name.lower(): value for name, _, value in (line.partition(": ") for line in lines)}
                while len(body) < int(headers.get("content-length", "0")):  # unread, closing would reset the line
                    body += self._connection.recv(4096)
                self.respond(self, headers.get("authorization", ""))
            except OSError:
                self.cut_off.set()
            finally:
                self.done.set()

    def __enter__(self) -> RawAgent:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stopping.set()
        self._listener.close()
        self._thread.join(5)


def raw_reply(status: int, body: bytes, reason: str = "Whatever") -> bytes:
    return b"HTTP/1.1 %d %s\r\nContent-Length: %d\r\n\r\n%s" % (status, reason.encode(), len(body), body)


def trickle_body(agent: RawAgent, _authorization: str) -> None:
    agent.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 30\r\n\r\n")
    agent.trickle(b" " * 30, every=0.1)


def trickle_headers(agent: RawAgent, _authorization: str) -> None:
    agent.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Slow: ")
    agent.trickle(b"x" * 30, every=0.1)
    agent.send(b"\r\n\r\n")


@pytest.mark.parametrize("respond", [trickle_headers, trickle_body], ids=["headers", "body"])
def test_a_trickling_agent_is_cut_off_at_the_deadline(respond: Callable[[RawAgent, str], None]) -> None:
    """A byte every 100 ms keeps every single read short; the deadline still ends the call after 0.5 s."""
    with RawAgent(respond) as agent:
        started = time.monotonic()
        result = AgentClient(agent.url, lambda: TOKEN).call(REQUEST, timeout_seconds=0.5)
        elapsed = time.monotonic() - started

    assert (result.outcome, result.http_status, result.error) == (
        AttemptOutcome.TIMEOUT,
        None,
        "no response within 0.5s",
    )
    assert 0.4 < elapsed < 1.5


def test_the_deadline_follows_the_injected_clock() -> None:
    """Each trickled byte is a second on the client's clock: a 10 s deadline ends after ~10 bytes, in real ms."""

    def respond(agent: RawAgent, _authorization: str) -> None:
        agent.send(b"HTTP/1.1 200 OK\r\nContent-Length: 30\r\n\r\n")
        agent.trickle(b" " * 30, every=0.005)

    with RawAgent(respond) as agent:
        client = AgentClient(agent.url, lambda: TOKEN, monotonic=lambda: float(agent.trickled))
        started = time.monotonic()
        result = client.call(REQUEST, timeout_seconds=10)
        elapsed = time.monotonic() - started
        trickled = agent.trickled

    assert (result.outcome, result.error) == (AttemptOutcome.TIMEOUT, "no response within 10s")
    assert 10 <= trickled < 15
    assert elapsed < 3


BODY_CAP = 64 * 1024
HUGE = 32 * 1024 * 1024
PIECE = b"x" * BODY_CAP


def endless_with_length(agent: RawAgent, _authorization: str) -> None:
    agent.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % HUGE)
    for _ in range(HUGE // len(PIECE)):
        agent.send(PIECE)


def endless_chunked(agent: RawAgent, _authorization: str) -> None:
    agent.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
    for _ in range(HUGE // len(PIECE)):
        agent.send(b"%x\r\n%s\r\n" % (len(PIECE), PIECE))
    agent.send(b"0\r\n\r\n")


@pytest.mark.parametrize("respond", [endless_with_length, endless_chunked], ids=["content-length", "chunked"])
def test_a_body_over_64_kib_is_an_error_and_read_no_further(
    respond: Callable[[RawAgent, str], None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 32 MiB 200: rejected quickly, with the cap plus one read taken from the socket, memory bounded."""
    pulled: list[int] = []
    for name in ("read", "read1"):
        original = getattr(urllib3.response.HTTPResponse, name)

        def counting(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            data = _original(self, *args, **kwargs)
            pulled.append(len(data))
            return data

        monkeypatch.setattr(urllib3.response.HTTPResponse, name, counting)

    with RawAgent(respond) as agent:
        tracemalloc.start()
        started = time.monotonic()
        try:
            result = AgentClient(agent.url, lambda: TOKEN).call(REQUEST, timeout_seconds=5)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        elapsed = time.monotonic() - started
        assert agent.done.wait(5)

    assert (result.outcome, result.http_status, result.conversation_id) == (AttemptOutcome.REJECTED, 200, None)
    assert result.error == "HTTP 200: response body over 64 KiB"
    assert sum(pulled) <= BODY_CAP + agent_http.READ_CHUNK_BYTES
    assert peak < 1024 * 1024
    assert agent.cut_off.is_set()
    assert agent.sent < HUGE
    assert elapsed < 2


def test_an_oversized_error_body_keeps_its_status_outcome_and_an_excerpt() -> None:
    """A proxy's huge 502 page is still a 502 (retryable); what is kept is the usual short excerpt."""
    body = b"<html>" + b"bad gateway " * 20_000
    with RawAgent(lambda agent, _auth: agent.send(raw_reply(502, body, "Bad Gateway"))) as agent:
        result = AgentClient(agent.url, lambda: TOKEN).call(REQUEST, timeout_seconds=5)

    assert (result.outcome, result.http_status) == (AttemptOutcome.RETRYABLE_ERROR, 502)
    assert result.error is not None
    assert result.error.startswith("HTTP 502: <html>bad gateway")
    assert result.error.endswith("…")
    assert len(result.error) < 350


SLASHY_TOKEN = "c2VjcmV0+dG9r/ZW4="  # base64-looking: URL-encoding and some JSON encoders change it


@pytest.mark.parametrize(
    ("echo", "secrets"),
    [
        (lambda auth: f"Unauthorized. You sent Authorization: {auth}\r\nTry again.", [SLASHY_TOKEN]),
        (lambda auth: json.dumps({"error": "bad token Bearer xyz"}), ["xyz"]),
        (lambda auth: f"authorization={quote(auth, safe='')}&retry=no", [quote(SLASHY_TOKEN, safe="")]),
        (lambda auth: json.dumps({"received": {"headers": {"AUTHORIZATION": auth}}}), [SLASHY_TOKEN]),
        (lambda auth: f"token {auth.split()[-1]} was revoked", [SLASHY_TOKEN]),
        (lambda auth: json.dumps({"detail": f"{auth.split()[-1]} expired"}).replace("/", "\\/"), ["dG9r\\/ZW4"]),
        (lambda auth: f"got bearer {SLASHY_TOKEN.upper()}; expected Authorization: Basic dXNlcjpwYXNz", ["dXNlcjpw"]),
        (lambda auth: f"who is {quote(SLASHY_TOKEN)}?", [quote(SLASHY_TOKEN)]),
    ],
    ids=["header-echo", "json-bearer", "form-field", "json-headers", "bare-token", "json-escaped", "case", "urlenc"],
)
def test_credentials_in_an_error_body_are_redacted(echo: Callable[[str], str], secrets: list[str]) -> None:
    """Viewers read `attempts[].error`: an agent echoing what it got must not hand them the bearer token."""

    def respond(agent: RawAgent, authorization: str) -> None:
        agent.send(raw_reply(401, echo(authorization).encode(), "Unauthorized"))

    with RawAgent(respond) as agent:
        result = AgentClient(agent.url, lambda: SLASHY_TOKEN).call(REQUEST, timeout_seconds=5)

    assert (result.outcome, result.http_status) == (AttemptOutcome.REJECTED, 401)
    assert result.error is not None
    assert result.error.startswith("HTTP 401: ")
    assert "[redacted]" in result.error
    for secret in [SLASHY_TOKEN, "dG9r", *secrets]:
        assert secret not in result.error


def test_credentials_in_network_error_messages_are_redacted(
    server: AgentServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception's text is kept (it says what went wrong), minus userinfo in URLs and the token."""
    url = server.url.replace("http://", "http://agent:pa55w0rd@")

    def failing(*_args: Any, **_kwargs: Any) -> None:
        raise urllib3.exceptions.ProtocolError(f"lost {url} after sending Authorization: Bearer {TOKEN}")

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "request", failing)
    result = AgentClient(url, lambda: TOKEN).call(REQUEST, timeout_seconds=5)

    assert result.outcome is AttemptOutcome.RETRYABLE_ERROR
    assert result.error is not None
    assert result.error.startswith("network error: ProtocolError: lost http://[redacted]@127.0.0.1:")
    assert "pa55w0rd" not in result.error
    assert TOKEN not in result.error
    assert "Authorization: [redacted]" in result.error


def test_status_classes() -> None:
    assert [classify_status(s) for s in (200, 299, 300, 407, 408, 499, 500, 599)] == [
        AttemptOutcome.SUCCEEDED,
        AttemptOutcome.SUCCEEDED,
        AttemptOutcome.REJECTED,
        AttemptOutcome.REJECTED,
        AttemptOutcome.RETRYABLE_ERROR,
        AttemptOutcome.REJECTED,
        AttemptOutcome.RETRYABLE_ERROR,
        AttemptOutcome.RETRYABLE_ERROR,
    ]


BUILTINS = {"scheduledFor": "2026-11-26T16:00:00Z", "triggerName": "Nightly", "invocationId": "inv-1"}
PAYLOAD: dict[str, Any] = {
    "repo": {"name": "web", "owner": {"login": "acme-bot"}},
    "days": 7,
    "ratio": 0.25,
    "dry": False,
    "labels": ["a", "b"],
    "filters": {"team": "core", "open": True},
    "nothing": None,
    "greeting": "héllo",
}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("Report for {{repo.name}}", "Report for web"),
        ("by {{repo.owner.login}}", "by acme-bot"),
        ("last {{days}} days, ratio {{ratio}}, dry {{dry}}", "last 7 days, ratio 0.25, dry false"),
        ("{{filters}}", '{"team":"core","open":true}'),
        ("{{labels}} first {{labels.0}}", '["a","b"] first a'),
        ("[{{missing}}] [{{repo.missing.deeper}}] [{{nothing}}] [{{days.x}}]", "[] [] [] []"),
        ("{{ repo.name }}", "web"),
        ("{{greeting}}", "héllo"),
        ("{{triggerName}} at {{scheduledFor}} ({{invocationId}})", "Nightly at 2026-11-26T16:00:00Z (inv-1)"),
        ("plain text, {single} braces", "plain text, {single} braces"),
    ],
)
def test_message_template(template: str, expected: str) -> None:
    assert render_message(template, PAYLOAD, BUILTINS) == expected


def test_builtins_win_over_payload_keys() -> None:
    assert render_message("{{triggerName}}", {"triggerName": "from payload"}, BUILTINS) == "Nightly"


def test_without_a_template_the_message_is_the_payload_as_json() -> None:
    assert render_message(None, {"days": 7, "repo": "web"}, BUILTINS) == '{"days":7,"repo":"web"}'
    assert render_message(None, None, BUILTINS) == ""
    assert render_message("{{days}}", None, BUILTINS) == ""


def test_token_from_secrets_manager_is_read_once_and_cached(aws: None) -> None:
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(Name="sundial/agent-token", SecretString="from-the-secret")["ARN"]
    calls: list[str] = []
    secrets.meta.events.register("before-call.secrets-manager.GetSecretValue", lambda **_kw: calls.append("get"))
    settings = make_settings("", AGENT_RUN_TOKEN_SECRET_ARN=arn, AGENT_RUN_TOKEN="")

    token = token_source(settings, lambda: secrets)
    assert isinstance(token, SecretToken)
    assert token() == "from-the-secret"
    secrets.put_secret_value(SecretId=arn, SecretString="rotated")
    assert token() == "from-the-secret"
    assert calls == ["get"]


def test_token_from_the_secret_reaches_the_agent(aws: None, server: AgentServer) -> None:
    """The deployed path: settings name the secret, the deps's Secrets Manager client reads it."""
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(Name="sundial/agent-token", SecretString="secret-bearer")["ARN"]
    settings = make_settings("", AGENT_RUN_TOKEN_SECRET_ARN=arn, AGENT_RUN_URL=server.url)
    client = Deps(settings, secrets_factory=lambda: secrets).agent_client()

    assert client.call(REQUEST, timeout_seconds=5).outcome is AttemptOutcome.SUCCEEDED
    assert server.received[0].headers["authorization"] == "Bearer secret-bearer"


def test_local_token_and_missing_configuration() -> None:
    assert token_source(make_settings("", AGENT_RUN_TOKEN="local-one"), lambda: None)() == "local-one"  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="AGENT_RUN_TOKEN"):
        token_source(Settings(AGENT_RUN_TOKEN="", AGENT_RUN_TOKEN_SECRET_ARN=""), lambda: None)  # type: ignore[arg-type,return-value]

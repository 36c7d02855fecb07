"""The agent call (SPEC §6) against a real HTTP server on 127.0.0.1: headers, body, outcomes, token, message."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from sundial.agent_client import (
    AgentClient,
    AgentRequest,
    AttemptOutcome,
    SecretToken,
    agent_client_for,
    classify_status,
    render_message,
    token_source,
)
from sundial.runtime import Runtime
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
    """The deployed path: settings name the secret, the runtime's Secrets Manager client reads it."""
    secrets = boto3.client("secretsmanager", region_name=REGION)
    arn = secrets.create_secret(Name="sundial/agent-token", SecretString="secret-bearer")["ARN"]
    settings = make_settings("", AGENT_RUN_TOKEN_SECRET_ARN=arn, AGENT_RUN_URL=server.url)
    client = agent_client_for(Runtime(settings, secrets_factory=lambda: secrets))

    assert client.call(REQUEST, timeout_seconds=5).outcome is AttemptOutcome.SUCCEEDED
    assert server.received[0].headers["authorization"] == "Bearer secret-bearer"


def test_local_token_and_missing_configuration() -> None:
    assert token_source(make_settings("", AGENT_RUN_TOKEN="local-one"), lambda: None)() == "local-one"  # type: ignore[arg-type,return-value]
    with pytest.raises(ValueError, match="AGENT_RUN_TOKEN"):
        token_source(Settings(AGENT_RUN_TOKEN="", AGENT_RUN_TOKEN_SECRET_ARN=""), lambda: None)  # type: ignore[arg-type,return-value]

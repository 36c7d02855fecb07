"""The agent call (SPEC §6): one HTTPS POST per attempt, its outcome classified for the retry policy.

The bearer token comes from Secrets Manager (cached for a few minutes, so a rotated token is
picked up without a redeploy) or, locally, from `AGENT_RUN_TOKEN`. It is only ever put in the
Authorization header: never logged, never recorded, never returned.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import cached_property
from typing import TYPE_CHECKING, Any

import urllib3
from aws_lambda_powertools.utilities.parameters import SecretsProvider

from sundial.runtime import Runtime
from sundial.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

logger = logging.getLogger(__name__)

TOKEN_CACHE_SECONDS = 300
RETRYABLE_STATUSES = frozenset({408, 425, 429})
MAX_ERROR_DETAIL_CHARS = 300
PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


class AttemptOutcome(StrEnum):
    """How one agent call ended; only the last two let the trigger's retries continue."""

    SUCCEEDED = "succeeded"
    REJECTED = "rejected"
    TIMEOUT = "timeout"
    RETRYABLE_ERROR = "retryable_error"

    @property
    def retryable(self) -> bool:
        return self in (AttemptOutcome.TIMEOUT, AttemptOutcome.RETRYABLE_ERROR)


@dataclass(frozen=True)
class AgentRequest:
    """The SPEC §6 body; `idempotency_key` goes in the header so the agent can drop a repeated attempt."""

    tenant_id: str
    project_id: str
    agent_id: str
    ref: str
    run_as_user_id: str | None
    trigger_id: str
    invocation_id: str
    scheduled_for: str
    attempt_number: int
    timezone: str
    message: str
    payload: dict[str, Any] | None

    @property
    def idempotency_key(self) -> str:
        return f"{self.invocation_id}:{self.attempt_number}"

    def body(self) -> dict[str, Any]:
        return {
            "tenantId": self.tenant_id,
            "projectId": self.project_id,
            "agentId": self.agent_id,
            "ref": self.ref,
            "runAsUserId": self.run_as_user_id,
            "triggerId": self.trigger_id,
            "invocationId": self.invocation_id,
            "scheduledFor": self.scheduled_for,
            "attemptNumber": self.attempt_number,
            "timezone": self.timezone,
            "message": self.message,
            "payload": self.payload,
        }


@dataclass(frozen=True)
class AgentResult:
    outcome: AttemptOutcome
    http_status: int | None = None
    error: str | None = None
    conversation_id: str | None = None


def classify_status(status: int) -> AttemptOutcome:
    """2xx succeeded; 408/425/429/5xx may pass on a later try; any other status will not."""
    if 200 <= status < 300:
        return AttemptOutcome.SUCCEEDED
    if status in RETRYABLE_STATUSES or status >= 500:
        return AttemptOutcome.RETRYABLE_ERROR
    return AttemptOutcome.REJECTED


def _placeholder_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _lookup(payload: Any, path: str) -> Any:
    """`a.b.0.c` through nested objects (and arrays by index); None when any step is missing."""
    current = payload
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def render_message(template: str | None, payload: dict[str, Any] | None, builtins: Mapping[str, str]) -> str:
    """`{{a.b}}` from the payload (built-ins win on a name clash); no template → the payload as JSON."""
    if template is None:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False) if payload is not None else ""

    def replace(match: re.Match[str]) -> str:
        path = match.group(1)
        if path in builtins:
            return builtins[path]
        return _placeholder_text(_lookup(payload, path))

    return PLACEHOLDER.sub(replace, template)


def _conversation_id(data: bytes) -> str | None:
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        return None
    value = parsed.get("conversationId") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) and value else None


def _error_detail(status: int, data: bytes) -> str:
    text = data.decode("utf-8", errors="replace").strip()
    if len(text) > MAX_ERROR_DETAIL_CHARS:
        text = f"{text[:MAX_ERROR_DETAIL_CHARS]}…"
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


class AgentClient:
    """POSTs runs to the agent runtime; one instance (and connection pool) per process."""

    def __init__(self, url: str, token: Callable[[], str], pool: urllib3.PoolManager | None = None) -> None:
        self.url = url
        self._token = token
        self._pool = pool or urllib3.PoolManager()

    def call(self, request: AgentRequest, timeout_seconds: float) -> AgentResult:
        """One attempt, bounded by `timeout_seconds`; never raises for anything the network or agent does."""
        headers = {
            "Authorization": f"Bearer {self._token()}",
            "Content-Type": "application/json",
            "Idempotency-Key": request.idempotency_key,
        }
        body = json.dumps(request.body(), separators=(",", ":"), ensure_ascii=False).encode()
        try:
            response = self._pool.request(
                "POST",
                self.url,
                body=body,
                headers=headers,
                timeout=urllib3.Timeout(total=timeout_seconds),
                retries=False,
                redirect=False,
            )
        except urllib3.exceptions.NewConnectionError:
            # Checked first: urllib3 makes it a subclass of ConnectTimeoutError, but it is a refusal.
            return AgentResult(AttemptOutcome.RETRYABLE_ERROR, error="network error: could not connect")
        except (urllib3.exceptions.TimeoutError, TimeoutError):
            return AgentResult(AttemptOutcome.TIMEOUT, error=f"no response within {timeout_seconds:g}s")
        except urllib3.exceptions.HTTPError as error:
            return AgentResult(AttemptOutcome.RETRYABLE_ERROR, error=f"network error: {type(error).__name__}")
        outcome = classify_status(response.status)
        if outcome is AttemptOutcome.SUCCEEDED:
            return AgentResult(outcome, response.status, conversation_id=_conversation_id(response.data))
        return AgentResult(outcome, response.status, error=_error_detail(response.status, response.data))


@dataclass
class SecretToken:
    """The token stored in a Secrets Manager secret, re-read at most every `TOKEN_CACHE_SECONDS`."""

    secret_arn: str
    client: Callable[[], SecretsManagerClient]

    @cached_property
    def _provider(self) -> SecretsProvider:
        return SecretsProvider(boto3_client=self.client())

    def __call__(self) -> str:
        value = self._provider.get(self.secret_arn, max_age=TOKEN_CACHE_SECONDS)
        return value.decode() if isinstance(value, bytes) else str(value)


def token_source(settings: Settings, secrets: Callable[[], SecretsManagerClient]) -> Callable[[], str]:
    """The Secrets Manager secret when configured, else `AGENT_RUN_TOKEN` (local runs)."""
    if settings.agent_run_token_secret_arn:
        return SecretToken(settings.agent_run_token_secret_arn, secrets)
    if settings.agent_run_token:
        token = settings.agent_run_token
        return lambda: token
    raise ValueError("Set AGENT_RUN_TOKEN_SECRET_ARN (or AGENT_RUN_TOKEN locally) for the agent's bearer token")


def agent_client_for(runtime: Runtime) -> AgentClient:
    """The process's agent client, configured from settings (`AGENT_RUN_URL` and the token)."""
    settings = runtime.settings
    if not settings.agent_run_url:
        raise ValueError("AGENT_RUN_URL is not set")
    return AgentClient(settings.agent_run_url, token_source(settings, lambda: runtime.secrets))

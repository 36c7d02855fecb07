"""The agent call (SPEC §6): one HTTPS POST per attempt, its outcome classified for the retry policy.

The bearer token comes from Secrets Manager (cached for a few minutes, so a rotated token is
picked up without a redeploy) or, locally, from `AGENT_RUN_TOKEN`. It is only ever put in the
Authorization header: never logged, never recorded, never returned — and whatever the agent or the
network says back is redacted before it is recorded, since viewers can read invocations.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.response import BaseHTTPResponse

from sundial.settings import Settings

if TYPE_CHECKING:
    from mypy_boto3_secretsmanager import SecretsManagerClient

logger = logging.getLogger(__name__)

TOKEN_CACHE_SECONDS = 300
RETRYABLE_STATUSES = frozenset({408, 425, 429})
MAX_ERROR_DETAIL_CHARS = 300
MAX_BODY_BYTES = 64 * 1024
# Telling the agent about a cancel happens inside an API request: it must not hold it for long.
CANCEL_TIMEOUT_SECONDS = 5.0
READ_CHUNK_BYTES = 16 * 1024
REDACTED = "[redacted]"
# `Authorization: …` as a header line, a JSON/dict key or a form field; the value runs to the end of its quotes or line.
AUTHORIZATION = re.compile(
    r"""(authorization["']?\s*(?:[:=]|%3A|%3D)\s*)(?:"(?:[^"\\]|\\.)*"?|'(?:[^'\\]|\\.)*'?|[^\r\n&]*)""",
    re.IGNORECASE,
)
BEARER = re.compile(r"""\b(bearer(?:\s+|%20|\+))[^\s"'<>,;&]+""", re.IGNORECASE)
URL_USERINFO = re.compile(r"""\b([a-z][a-z0-9+.-]*://)[^/\s@?#"']+@""", re.IGNORECASE)


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


def _conversation_id(data: bytes) -> str | None:
    try:
        parsed = json.loads(data) if data else None
    except ValueError:
        return None
    value = parsed.get("conversationId") if isinstance(parsed, dict) else None
    return value if isinstance(value, str) and value else None


def _secret_forms(secret: str) -> set[str]:
    """The secret as an agent might echo it back: as is, URL-encoded, JSON-escaped (with or without `\\/`)."""
    escaped = json.dumps(secret)[1:-1]
    return {secret, quote(secret, safe=""), quote(secret), quote_plus(secret), escaped, escaped.replace("/", "\\/")}


def redact_credentials(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` without `secrets` (in their usual encodings), `Bearer …`/`Authorization: …` values and URL userinfo."""
    for form in sorted({form for secret in secrets if secret for form in _secret_forms(secret)}, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    text = AUTHORIZATION.sub(rf"\1{REDACTED}", text)
    text = BEARER.sub(rf"\1{REDACTED}", text)
    return URL_USERINFO.sub(rf"\1{REDACTED}@", text)


def _excerpt(text: str, secrets: Iterable[str]) -> str:
    """Redacted before it is cut, so a secret across the cut cannot leave its first half behind."""
    text = redact_credentials(text, secrets).strip()
    return f"{text[:MAX_ERROR_DETAIL_CHARS]}…" if len(text) > MAX_ERROR_DETAIL_CHARS else text


def _error_detail(status: int, data: bytes, secrets: Iterable[str]) -> str:
    text = _excerpt(data.decode("utf-8", errors="replace"), secrets)
    return f"HTTP {status}: {text}" if text else f"HTTP {status}"


class _Deadline:
    """The attempt's wall-clock end, on an injectable monotonic clock."""

    def __init__(self, seconds: float, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._end = monotonic() + seconds

    def remaining(self) -> float:
        return self._end - self._monotonic()

    def check(self) -> None:
        if self.remaining() <= 0:
            raise TimeoutError("the attempt's deadline passed")


class _Watchdog:
    """Shuts the socket down at the deadline, which wakes a blocked read however slowly the agent trickles.

    Socket timeouts bound each read, not the call: an agent sending a byte every 100 ms never trips them.
    """

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._stopped = False
        self.fired = False
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True

    def _fire(self) -> None:
        with self._lock:  # never after `stop`: by then the socket may be closed and its descriptor reused
            if self._stopped:
                return
            self.fired = True
            # The plain-socket method even for TLS: SSLSocket.shutdown would drop its SSL state mid-read.
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)

    def __enter__(self) -> _Watchdog:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._stopped = True
        self._timer.cancel()


def _read_body(response: BaseHTTPResponse, deadline: _Deadline) -> tuple[bytes, bool]:
    """The body's first `MAX_BODY_BYTES` and whether that was all of it, read a chunk at a time against the deadline.

    `read1` returns what one read brings, so a trickle is seen between chunks; at most the cap plus a chunk is read.
    """
    body = bytearray()
    while len(body) <= MAX_BODY_BYTES:
        deadline.check()
        chunk = response.read1(READ_CHUNK_BYTES)
        if not chunk:
            return bytes(body), True
        body += chunk
    return bytes(body[:MAX_BODY_BYTES]), False


def _network_failure(error: Exception, timed_out: bool, timeout_seconds: float, secrets: Iterable[str]) -> AgentResult:
    """A timeout when the deadline ended it (a shut-down socket surfaces as any connection error); else retryable."""
    if timed_out:
        return AgentResult(AttemptOutcome.TIMEOUT, error=f"no response within {timeout_seconds:g}s")
    if isinstance(error, urllib3.exceptions.NewConnectionError):
        # Checked first: urllib3 makes it a subclass of ConnectTimeoutError, but it is a refusal.
        return AgentResult(AttemptOutcome.RETRYABLE_ERROR, error="network error: could not connect")
    if isinstance(error, urllib3.exceptions.TimeoutError | TimeoutError):
        return AgentResult(AttemptOutcome.TIMEOUT, error=f"no response within {timeout_seconds:g}s")
    message = _excerpt(str(error), secrets)
    detail = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return AgentResult(AttemptOutcome.RETRYABLE_ERROR, error=f"network error: {detail}")


class AgentClient:
    """POSTs runs to the agent runtime, each attempt on a fresh connection bounded by a deadline.

    A fresh connection because the deadline's watchdog must own the socket for the whole call, and because
    attempts are minutes apart: a pooled keep-alive connection would mostly be stale by then. Connecting (name
    resolution, TCP and TLS handshakes) is bounded step by step by the socket timeout, not by the watchdog
    (getaddrinfo cannot be interrupted); the deadline is checked right after it.

    The body is read up to `MAX_BODY_BYTES`. A 2xx with more is `rejected`, not retried: the agent has
    already accepted the run, so a retry (a new idempotency key) would start it again, and an agent that
    answers like that will answer like that again. Other statuses keep their outcome; their excerpt is
    taken from the first bytes.
    """

    def __init__(self, url: str, token: Callable[[], str], *, monotonic: Callable[[], float] = time.monotonic) -> None:
        parsed = urllib3.util.parse_url(url)
        scheme = parsed.scheme or "http"
        if scheme not in ("http", "https") or not parsed.host:
            raise ValueError("the agent URL must be http(s)://host[:port]/path")
        self.url = url
        self._token = token
        self._monotonic = monotonic
        self._connection_class = HTTPSConnection if scheme == "https" else HTTPConnection
        self._host = parsed.host.strip("[]")  # an IPv6 literal, unbracketed for the socket
        self._port = parsed.port
        self._target = parsed.request_uri

    def call(self, request: AgentRequest, timeout_seconds: float) -> AgentResult:
        """One attempt, connect to last body byte, within `timeout_seconds`; never raises for the network or agent."""
        return self._post(request.body(), request.idempotency_key, timeout_seconds)

    def cancel(
        self, invocation_id: str, attempt_number: int, timeout_seconds: float = CANCEL_TIMEOUT_SECONDS
    ) -> AgentResult:
        """Tell the agent a run was cancelled (SPEC §5): `{invocationId, attemptNumber}`, same token, same limits."""
        body = {"invocationId": invocation_id, "attemptNumber": attempt_number}
        return self._post(body, f"cancel:{invocation_id}:{attempt_number}", timeout_seconds)

    def _post(self, payload: dict[str, Any], idempotency_key: str, timeout_seconds: float) -> AgentResult:
        deadline = _Deadline(timeout_seconds, self._monotonic)
        token = self._token()
        headers = {
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Idempotency-Key": idempotency_key,
        }
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
        watchdog: _Watchdog | None = None
        connection = self._connection_class(self._host, self._port, timeout=max(deadline.remaining(), 0.001))
        try:
            deadline.check()
            connection.connect()
            deadline.check()
            with _Watchdog(connection.sock, deadline.remaining()) as watchdog:
                connection.request("POST", self._target, body=body, headers=headers, preload_content=False)
                response = connection.getresponse()
                data, complete = _read_body(response, deadline)
            if watchdog.fired:  # the shut-down socket may have looked like the end of a close-delimited body
                raise TimeoutError("the attempt's deadline passed")
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as error:
            return _network_failure(error, watchdog is not None and watchdog.fired, timeout_seconds, [token])
        finally:
            connection.close()
        return _response_result(response.status, data, complete, token)


def _response_result(status: int, data: bytes, complete: bool, token: str) -> AgentResult:
    outcome = classify_status(status)
    if outcome is AttemptOutcome.SUCCEEDED:
        if not complete:
            error = f"HTTP {status}: response body over {MAX_BODY_BYTES // 1024} KiB"
            return AgentResult(AttemptOutcome.REJECTED, status, error=error)
        return AgentResult(outcome, status, conversation_id=_conversation_id(data))
    return AgentResult(outcome, status, error=_error_detail(status, data, [token]))


@dataclass
class SecretToken:
    """The token stored in a Secrets Manager secret, re-read at most every `TOKEN_CACHE_SECONDS`.

    Cached here rather than by powertools' SecretsProvider, whose module imports boto3 (and s3transfer)
    for every handler that imports this one."""

    secret_arn: str
    client: Callable[[], SecretsManagerClient]
    _value: str | None = None
    _read_at: float = 0.0

    def __call__(self) -> str:
        now = time.monotonic()
        if self._value is None or now - self._read_at >= TOKEN_CACHE_SECONDS:
            secret = self.client().get_secret_value(SecretId=self.secret_arn)
            self._value = secret["SecretString"] if "SecretString" in secret else secret["SecretBinary"].decode()
            self._read_at = now
        return self._value


def token_source(settings: Settings, secrets: Callable[[], SecretsManagerClient]) -> Callable[[], str]:
    """The Secrets Manager secret when configured, else `AGENT_RUN_TOKEN` (local runs)."""
    if settings.agent_run_token_secret_arn:
        return SecretToken(settings.agent_run_token_secret_arn, secrets)
    if settings.agent_run_token:
        token = settings.agent_run_token
        return lambda: token
    raise ValueError("Set AGENT_RUN_TOKEN_SECRET_ARN (or AGENT_RUN_TOKEN locally) for the agent's bearer token")

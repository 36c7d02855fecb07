"""An API Gateway HTTP API stand-in: each request becomes a payload-format-2.0 event for the API function.

Behind the routes of template.yaml (`ANY /{proxy+}` with the JWT authorizer; `GET /openapi.json`,
`GET /docs`, and the console's `GET /console` and `GET /console/{asset}` without), it verifies HS256
bearer tokens and passes the claims on the way API Gateway's JWT authorizer does: every value a string,
numbers and booleans as text, arrays flattened to `[a b]`. Refusals look like API Gateway's own: 401
`{"message":"Unauthorized"}` before the function is called. Like Lambda, it gives the function one
event at a time (see `ApiGateway`). One route exists only here: `POST /console/dev-token` signs
development tokens for the console's sign-in page, when the stack uses the development secret.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import jwt

from sundial_local.config import ACCOUNT
from sundial_local.token import parse_roles

logger = logging.getLogger(__name__)

Integration = Callable[[dict[str, Any]], dict[str, Any]]
TokenIssuer = Callable[[str, str, list[str]], str]  # (tenant, sub, roles) → a signed token
PROXY_ROUTE = "ANY /{proxy+}"
PUBLIC_PATHS = frozenset({"/openapi.json", "/docs", "/console"})
CONSOLE_ASSET_ROUTE = "GET /console/{asset}"
PUBLIC_ROUTE_KEYS = (*sorted(f"GET {path}" for path in PUBLIC_PATHS), CONSOLE_ASSET_ROUTE)
DEV_TOKEN_PATH = "/console/dev-token"
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
API_ID = "local"


class TokenRejectedError(Exception):
    """The token is missing or fails verification; the reason goes to the log, never to the caller."""


def claim_text(value: Any) -> str:
    """A claim as API Gateway hands it to the integration: strings as is, arrays as `[a b]`, the rest as text."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + " ".join(claim_text(item) for item in value) + "]"
    return json.dumps(value, separators=(",", ":"))


def verify_bearer(authorization: str | None, secret: str) -> dict[str, str]:
    """The verified claims of `Authorization: Bearer <jwt>` (the bare token is accepted too, as API Gateway does)."""
    if not authorization or not authorization.strip():
        raise TokenRejectedError("no Authorization header")
    token = authorization.strip()
    if token[:7].lower() == "bearer ":
        token = token[7:].strip()
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["exp"], "verify_aud": False, "verify_iss": False},
        )
    except jwt.PyJWTError as error:
        raise TokenRejectedError(f"{type(error).__name__}: {error}") from None
    return {name: claim_text(value) for name, value in claims.items()}


def public_route(method: str, path: str) -> str | None:
    """The route key of a route that needs no token, as template.yaml declares them; None for the others."""
    if method != "GET":
        return None
    if path in PUBLIC_PATHS:
        return f"GET {path}"
    asset = path.removeprefix("/console/")
    if asset != path and asset and "/" not in asset:
        return CONSOLE_ASSET_ROUTE
    return None


def _joined(pairs: list[tuple[str, str]]) -> dict[str, str]:
    """Repeated names joined with commas, as API Gateway does for headers and query parameters."""
    joined: dict[str, str] = {}
    for name, value in pairs:
        joined[name] = f"{joined[name]},{value}" if name in joined else value
    return joined


def build_event(
    *,
    method: str,
    target: str,
    headers: list[tuple[str, str]],
    body: bytes,
    claims: Mapping[str, str] | None,
    source_ip: str,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The payload-format-2.0 event API Gateway sends for one request (shape: events/api_create_trigger.json)."""
    moment = now or datetime.now(UTC)
    split = urlsplit(target)
    path = unquote(split.path) or "/"
    route_key = public_route(method, path) or PROXY_ROUTE
    lowered = [(name.lower(), value) for name, value in headers]
    cookies = [part.strip() for name, value in lowered if name == "cookie" for part in value.split(";")]
    header_map = _joined([(name, value) for name, value in lowered if name != "cookie"])
    host = header_map.get("host", "127.0.0.1")
    request_context: dict[str, Any] = {
        "accountId": ACCOUNT,
        "apiId": API_ID,
        "domainName": host,
        "domainPrefix": host.split(".")[0].split(":")[0],
        "http": {
            "method": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": header_map.get("user-agent", ""),
        },
        "requestId": str(uuid.uuid4()),
        "routeKey": route_key,
        "stage": "$default",
        "time": moment.strftime("%d/%b/%Y:%H:%M:%S +0000"),
        "timeEpoch": int(moment.timestamp() * 1000),
    }
    if claims is not None:
        request_context["authorizer"] = {"jwt": {"claims": dict(claims), "scopes": None}}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": split.query,
        "headers": header_map,
        "requestContext": request_context,
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = [cookie for cookie in cookies if cookie]
    if split.query:
        event["queryStringParameters"] = _joined(parse_qsl(split.query, keep_blank_values=True))
    if route_key == PROXY_ROUTE:
        event["pathParameters"] = {"proxy": path.lstrip("/")}
    elif route_key == CONSOLE_ASSET_ROUTE:
        event["pathParameters"] = {"asset": path.removeprefix("/console/")}
    if body:
        try:
            event["body"] = body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # TCP_NODELAY: a kept-alive answer is not held back for the client's ACK
    server: _GatewayServer
    refusal = ""  # why the authorizer said no, for the request's log line

    def do_GET(self) -> None:
        self.server.gateway.serve(self)

    def do_POST(self) -> None:
        self.server.gateway.serve(self)

    def do_PUT(self) -> None:
        self.server.gateway.serve(self)

    def do_PATCH(self) -> None:
        self.server.gateway.serve(self)

    def do_DELETE(self) -> None:
        self.server.gateway.serve(self)

    def do_HEAD(self) -> None:
        self.server.gateway.serve(self)

    def do_OPTIONS(self) -> None:
        self.server.gateway.serve(self)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)

    def send_whole(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        """Status line, headers and body in one write: a head and a body written apart cost two packets,
        and with Nagle's algorithm the second waits for the client's delayed ACK (~40 ms per request)."""
        head = io.BytesIO()
        stream, self.wfile = self.wfile, head  # the standard methods write the head as they go
        try:
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
        finally:
            self.wfile = stream
        stream.write(head.getvalue() if self.command == "HEAD" else head.getvalue() + body)


class _GatewayServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default listen backlog (5) drops or resets a burst of 32 new connections
    gateway: ApiGateway


class ApiGateway:
    """Binds on construction (so a taken port fails at once); `serve_forever` runs in the caller's thread.

    Each connection has its own thread, but the integration gets one event at a time, as a Lambda
    instance does: the API function keeps per-request state on its module-level resolver (the current
    event, route arguments, response status and headers), so two calls at once answer each other's
    requests and gate them with each other's tenant. A pool of workers would need a resolver each, which
    the module (one `app`, shared powertools logger and metrics) cannot give, so a lock makes one worker.
    That costs little: reading, token checks, building the event and writing the answer stay concurrent,
    and the emulated AWS behind the function runs in this process under the same GIL anyway.
    """

    def __init__(
        self, host: str, port: int, secret: str, integration: Integration, *, dev_tokens: TokenIssuer | None = None
    ) -> None:
        self._secret = secret
        self._dev_tokens = dev_tokens
        self._integration = integration
        self._one_event_at_a_time = threading.Lock()
        self._server = _GatewayServer((host, port), _RequestHandler)
        self._server.gateway = self

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def serve_forever(self) -> None:
        self._server.serve_forever(poll_interval=0.2)

    def stop_serving(self) -> None:
        """Stop `serve_forever` (call only once it runs); requests in progress finish on their threads."""
        self._server.shutdown()

    def close(self) -> None:
        self._server.server_close()

    def serve(self, request: _RequestHandler) -> None:
        started = time.monotonic()
        request.refusal = ""  # one handler serves every request of a kept-alive connection
        status, headers, body = self._respond(request)
        request.send_whole(status, headers, body)
        elapsed_ms = (time.monotonic() - started) * 1000
        path = urlsplit(request.path).path
        reason = f": {request.refusal}" if request.refusal else ""
        logger.info("api %s %s → %d (%.0f ms)%s", request.command, path, status, elapsed_ms, reason)

    def _respond(self, request: _RequestHandler) -> tuple[int, list[tuple[str, str]], bytes]:
        try:
            body = _read_body(request)
        except ValueError:
            request.close_connection = True
            return _gateway_error(HTTPStatus.BAD_REQUEST, "Bad Request")
        if body is None:
            request.close_connection = True
            return _gateway_error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "Request Entity Too Large")
        target, method = request.path, request.command
        path = unquote(urlsplit(target).path)
        if path in ("", "/"):
            return _gateway_error(HTTPStatus.NOT_FOUND, "Not Found")
        if path == DEV_TOKEN_PATH and method == "POST" and self._dev_tokens is not None:
            return _dev_token(self._dev_tokens, body)
        claims: dict[str, str] | None = None
        if public_route(method, path) is None:
            try:
                claims = verify_bearer(request.headers.get("Authorization"), self._secret)
            except TokenRejectedError as refused:
                request.refusal = f"JWT authorizer: {refused}"
                return _gateway_error(HTTPStatus.UNAUTHORIZED, "Unauthorized")
        event = build_event(
            method=method,
            target=target,
            headers=list(request.headers.items()),
            body=body,
            claims=claims,
            source_ip=request.client_address[0],
        )
        try:
            with self._one_event_at_a_time:
                result = self._integration(event)
            return _lambda_response(result)
        except Exception:
            logger.exception("api %s %s: the API function failed", method, path)
            return _gateway_error(HTTPStatus.INTERNAL_SERVER_ERROR, "Internal Server Error")


def _read_body(request: BaseHTTPRequestHandler) -> bytes | None:
    """The request body (Content-Length or chunked); None when it is over API Gateway's 10 MB limit."""
    if request.headers.get("Transfer-Encoding", "").lower() != "chunked":
        length = int(request.headers.get("Content-Length") or 0)
        if length < 0:
            raise ValueError("negative Content-Length")
        return None if length > MAX_PAYLOAD_BYTES else request.rfile.read(length)
    chunks: list[bytes] = []
    total = 0
    while size := int(request.rfile.readline().split(b";")[0].strip() or b"0", 16):
        total += size
        if total > MAX_PAYLOAD_BYTES:
            return None
        chunks.append(request.rfile.read(size))
        request.rfile.readline()
    while request.rfile.readline().strip():
        pass  # trailers
    return b"".join(chunks)


def _dev_token(issue: TokenIssuer, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
    """`{"tenant", "sub", "roles"}` → `{"token"}`: the console's development sign-in (local stack only)."""
    try:
        request = json.loads(body or b"{}")
        tenant, sub, roles = (str(request.get(name, "")).strip() for name in ("tenant", "sub", "roles"))
        if not tenant or not sub:
            raise ValueError("tenant and sub are required")
        token = issue(tenant, sub, parse_roles(roles))
    except (ValueError, AttributeError) as refused:
        return _gateway_error(HTTPStatus.BAD_REQUEST, f"No token: {refused}")
    return (
        HTTPStatus.OK.value,
        [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
        json.dumps({"token": token}).encode(),
    )


def _gateway_error(status: HTTPStatus, message: str) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"message": message}).encode()
    return status.value, [("Content-Type", "application/json"), ("apigw-requestid", str(uuid.uuid4()))], body


def _lambda_response(result: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
    """A payload-format-2.0 response (statusCode, headers, cookies, body, isBase64Encoded) as HTTP."""
    status = int(result["statusCode"])
    headers = [(str(name), str(value)) for name, value in (result.get("headers") or {}).items()]
    headers += [("Set-Cookie", str(cookie)) for cookie in result.get("cookies") or []]
    headers.append(("apigw-requestid", str(uuid.uuid4())))
    text = result.get("body") or ""
    body = base64.b64decode(text) if result.get("isBase64Encoded") else str(text).encode()
    return status, [(name, value) for name, value in headers if name.lower() != "content-length"], body

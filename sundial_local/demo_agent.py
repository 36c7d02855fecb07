"""A stand-in agent runtime: accepts every run (SPEC §6 body), logs it readably, answers with a conversation id."""

from __future__ import annotations

import json
import logging
import threading
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

logger = logging.getLogger(__name__)
MESSAGE_PREVIEW_CHARS = 120


def describe_run(body: dict[str, Any]) -> str:
    """One line per received run: which trigger, which occurrence and attempt, and the start of the message."""
    message = str(body.get("message") or "")
    if len(message) > MESSAGE_PREVIEW_CHARS:
        message = f"{message[:MESSAGE_PREVIEW_CHARS]}…"
    where = f"{body.get('tenantId')}/{body.get('projectId')}/{body.get('agentId')}@{body.get('ref')}"
    return (
        f"demo agent ran {body.get('triggerId')} ({where}) for {body.get('scheduledFor')}, "
        f"attempt {body.get('attemptNumber')}, invocation {body.get('invocationId')}: {message!r}"
    )


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw or b"null")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            self._reply(HTTPStatus.BAD_REQUEST, {"error": "expected a JSON object"})
            return
        logger.info("%s", describe_run(body))
        self._reply(HTTPStatus.OK, {"conversationId": f"demo-{uuid.uuid4().hex[:12]}"})

    def _reply(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)


class DemoAgent:
    """Listens on 127.0.0.1:`port` (0 picks a free port) from construction; `start` serves on a daemon thread."""

    def __init__(self, port: int = 0) -> None:
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-agent", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/runs"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

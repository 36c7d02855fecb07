"""The local stack as a subprocess, an agent that records what it receives, and an HTTP client with real tokens:
shared by the end-to-end tests of the API and of the console."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import jwt
import urllib3

ROOT = Path(__file__).resolve().parents[2]
SECRET = "e2e-local-stack-secret-with-enough-bytes"
READY = "Sundial local stack ready on "
TICK_SECONDS = "2"
TICK_SECONDS_FLOAT = float(TICK_SECONDS)
STARTUP_SECONDS = 90.0
BASE = "/tenants/acme/projects/e2e/agents/reporter/scheduled-triggers"
NEVER = "0 0 1 1 *"
T = TypeVar("T")


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float, interval: float = 0.2) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def token(tenant: str = "acme", sub: str = "alice", roles: tuple[str, ...] = ("editor",), **extra: Any) -> str:
    claims = {"sub": sub, "tenant_id": tenant, "roles": list(roles), "exp": int(time.time()) + 3600, **extra}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def send_json(handler: BaseHTTPRequestHandler, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    data = json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    for name, value in (headers or {}).items():
        handler.send_header(name, value)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def serve_in_background(handler: type[BaseHTTPRequestHandler]) -> ThreadingHTTPServer:
    """A server on a free port of 127.0.0.1, answering on its own thread until `shutdown()`."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@dataclass
class Received:
    body: dict[str, Any]
    headers: dict[str, str]
    at: float


@dataclass
class RecordingAgent:
    """The agent runtime the stack calls: records every request with its arrival time; can fail on purpose,
    and can hold a trigger's calls open until the test releases them (a run that stays `running`)."""

    received: list[Received] = field(default_factory=list)
    failures_left: dict[str, int] = field(default_factory=dict)
    held: dict[str, threading.Event] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with agent.lock:
                    agent.received.append(Received(body, dict(self.headers.items()), arrived))
                    trigger = body["triggerId"]
                    failing = agent.failures_left.get(trigger, 0) > 0
                    if failing:
                        agent.failures_left[trigger] -= 1
                    hold = agent.held.get(trigger)
                if hold is not None:
                    hold.wait(timeout=120)
                status, reply = (500, {"error": "on purpose"}) if failing else (200, {"conversationId": f"c-{arrived}"})
                send_json(self, status, reply)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = serve_in_background(Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/runs"

    def runs(self, trigger_id: str) -> list[Received]:
        with self.lock:
            return [run for run in self.received if run.body["triggerId"] == trigger_id]


class StackProcess:
    """`python -m sundial_local` on free ports (PORT=0: its ready line says which) with its own state directory."""

    def __init__(self, agent_url: str, state_dir: Path, port: int = 0, *, secret: str = SECRET, **extra: str) -> None:
        self.url = ""
        self.env = {
            **{name: value for name, value in os.environ.items() if name != "SUNDIAL_LOCAL_JWT_SECRET"},
            "PORT": str(port),
            "TICK_SECONDS": TICK_SECONDS,
            "AGENT_RUN_URL": agent_url,
            "SUNDIAL_LOCAL_JWT_SECRET": secret,
            "SUNDIAL_STATE_DIR": str(state_dir),
            **extra,
        }
        self.lines: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self.launch_command = [sys.executable, "-m", "sundial_local"]

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def launch(self) -> subprocess.Popen[str]:
        self.lines.clear()
        self.process = subprocess.Popen(
            self.launch_command,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        stream = self.process.stdout
        assert stream is not None
        threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True).start()
        return self.process

    def start(self) -> None:
        process = self.launch()
        try:
            wait_for("the ready line", lambda: READY in self.output or process.poll() is not None, STARTUP_SECONDS)
        except AssertionError as error:
            raise AssertionError(f"{error}; output so far:\n{self.output}") from None
        ready = re.search(rf"^{re.escape(READY)}(http://127\.0\.0\.1:\d+)$", self.output, re.MULTILINE)
        assert ready is not None, self.output
        self.url = ready.group(1)

    def stop(self, signum: int = signal.SIGINT) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.process.wait(timeout=60)


@dataclass
class Api:
    url: str
    http: urllib3.PoolManager = field(default_factory=urllib3.PoolManager)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        auth: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        sent = {"Content-Type": "application/json", **(headers or {})}
        if auth is not None:
            sent["Authorization"] = f"Bearer {auth}"
        response = self.http.request(
            method,
            f"{self.url}{path}",
            body=json.dumps(body) if body is not None else None,
            headers=sent,
            timeout=30,
            retries=False,
        )
        return response.status, json.loads(response.data) if response.data else None

    def ok(self, method: str, path: str, body: Any = None, *, expect: int = 200, **kwargs: Any) -> Any:
        kwargs.setdefault("auth", token())
        status, data = self.call(method, path, body, **kwargs)
        assert status == expect, (method, path, status, data)
        return data

    def invocations(self, trigger_id: str) -> list[dict[str, Any]]:
        data: list[dict[str, Any]] = self.ok("GET", f"{BASE}/{trigger_id}/invocations")["data"]
        return data

    def invocation(self, trigger_id: str, invocation_id: str) -> dict[str, Any]:
        found: dict[str, Any] = self.ok("GET", f"{BASE}/{trigger_id}/invocations/{invocation_id}")
        return found

    def finished(self, trigger_id: str, invocation_id: str, timeout: float) -> dict[str, Any]:
        """The invocation once it is no longer pending or running."""

        def final() -> dict[str, Any] | None:
            found = self.invocation(trigger_id, invocation_id)
            return found if found["status"] not in ("pending", "running") else None

        return wait_for(f"invocation {invocation_id} to finish", final, timeout, interval=0.5)

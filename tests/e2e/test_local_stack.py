"""The whole system end to end: `python -m sundial_local` as a subprocess, driven only over HTTP with real tokens.

One stack serves every scenario. The slow ones (a cron trigger over two minute boundaries, an agent
that fails twice) start as soon as the stack is up and are checked later, so their waits overlap the
other tests instead of adding to them.
"""

from __future__ import annotations

import itertools
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import jwt
import pytest

from tests.e2e.stack_support import (
    BASE,
    NEVER,
    READY,
    TICK_SECONDS,
    TICK_SECONDS_FLOAT,
    Api,
    RecordingAgent,
    StackProcess,
    iso,
    parse_iso,
    token,
    wait_for,
)

pytestmark = pytest.mark.e2e


@dataclass
class Background:
    """Scenarios started when the stack comes up and checked by later tests."""

    cron_created: datetime
    flaky_invocation: str
    jittered_start: datetime  # when the jittered trigger's first run is to start, as the API showed it
    jittered_nominal: datetime


@pytest.fixture(scope="module")
def agent() -> Iterator[RecordingAgent]:
    recording = RecordingAgent()
    yield recording
    recording.server.shutdown()


@pytest.fixture(scope="module")
def stack(agent: RecordingAgent, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackProcess]:
    process = StackProcess(agent.url, tmp_path_factory.mktemp("shared-stack"))
    process.start()
    yield process
    code = process.stop()
    assert code == 0, process.output


@pytest.fixture(scope="module")
def api(stack: StackProcess) -> Api:
    return Api(stack.url)


@pytest.fixture(scope="module", autouse=True)
def background(api: Api, agent: RecordingAgent) -> Background:
    created = datetime.now(UTC)
    api.ok("POST", BASE, {"id": "every-minute", "name": "Every minute", "cronExpression": "* * * * *"}, expect=201)
    agent.failures_left["flaky"] = 2
    flaky = {"id": "flaky", "name": "Flaky", "cronExpression": NEVER, "maxRetries": 2, "retryDelaySeconds": 10}
    api.ok("POST", BASE, flaky, expect=201)
    accepted = api.ok("POST", f"{BASE}/flaky/run", expect=202)
    nominal = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=8)
    jittered = {
        "id": "jittered",
        "name": "Jittered",
        "intervalSeconds": 3600,
        "startAt": iso(nominal),
        "jitterSeconds": 20,
    }
    shown = api.ok("POST", BASE, jittered, expect=201)
    return Background(created, accepted["invocationId"], parse_iso(shown["nextRunAt"]), nominal)


def test_one_time_trigger_reaches_the_agent_once_on_time(api: Api, agent: RecordingAgent, stack: StackProcess) -> None:
    run_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=6)
    api.ok("POST", BASE, {"id": "one-shot", "name": "One shot", "runAt": iso(run_at), "payload": {"n": 1}}, expect=201)

    first = wait_for("the one-time run", lambda: agent.runs("one-shot"), timeout=20)[0]
    time.sleep(2 * float(TICK_SECONDS) + 1)  # room for a duplicate to show up

    assert len(agent.runs("one-shot")) == 1
    assert run_at.timestamp() <= first.at <= run_at.timestamp() + 2, first.at - run_at.timestamp()
    assert first.body["scheduledFor"] == iso(run_at)
    assert first.body["payload"] == {"n": 1}
    assert first.headers["Authorization"].startswith("Bearer ")
    assert first.headers["Idempotency-Key"] == f"{first.body['invocationId']}:1"

    def with_last_run() -> dict[str, Any] | None:
        found: dict[str, Any] = api.ok("GET", f"{BASE}/one-shot")
        return found if found["lastRunStatus"] else None

    finished = wait_for("the trigger to show its finished run", with_last_run, timeout=10)
    assert finished["lastRunStatus"] == "completed"
    assert finished["enabled"] is False
    assert finished["nextRunAt"] is None
    assert f"dispatched one-shot (acme) for {iso(run_at)}" in stack.output
    assert f"run one-shot (acme) for {iso(run_at)}: attempt 1 succeeded, completed" in stack.output


def test_a_jittered_run_starts_at_its_offset_under_its_nominal_instant(
    api: Api, agent: RecordingAgent, background: Background
) -> None:
    start, nominal = background.jittered_start, background.jittered_nominal
    assert nominal <= start < nominal + timedelta(seconds=20), "nextRunAt shows the start, jitter included"
    (run,) = wait_for("the jittered run", lambda: agent.runs("jittered"), timeout=45)
    assert start.timestamp() <= run.at <= start.timestamp() + 2, run.at - start.timestamp()
    assert run.body["scheduledFor"] == iso(nominal)
    done = api.finished("jittered", run.body["invocationId"], timeout=10)
    assert (done["scheduledFor"], done["startsAt"], done["status"]) == (iso(nominal), iso(start), "completed")


def test_buffer_one_backfill_waits_for_a_running_run_then_runs_and_a_further_one_is_skipped(
    api: Api, agent: RecordingAgent, stack: StackProcess
) -> None:
    """Two backfilled occurrences start while a run-now is running: one waits for it, the other is skipped."""
    now = datetime.now(UTC).replace(microsecond=0)
    body = {
        "id": "buffered",
        "name": "Buffered",
        "intervalSeconds": 3600,
        "startAt": iso(now - timedelta(hours=2, minutes=30)),
        "overlapPolicy": "buffer_one",
    }
    api.ok("POST", BASE, body, expect=201)
    agent.held["buffered"] = hold = threading.Event()
    running = api.ok("POST", f"{BASE}/buffered/run", expect=202)["invocationId"]
    wait_for("the run-now to reach the agent", lambda: agent.runs("buffered"), timeout=15)

    window = {"from": iso(now - timedelta(hours=3)), "to": iso(now - timedelta(hours=1))}
    accepted = api.ok("POST", f"{BASE}/buffered/backfill", window, expect=202)
    assert accepted["started"] == 2
    ids = accepted["invocationIds"]

    def one_skipped() -> list[dict[str, Any]] | None:
        shown = [api.ok("GET", f"{BASE}/buffered/invocations/{invocation_id}") for invocation_id in ids]
        return shown if sorted(item["status"] for item in shown) == ["pending", "skipped"] else None

    shown = wait_for("one backfilled run to be skipped", one_skipped, timeout=20)
    (skipped,) = [item for item in shown if item["status"] == "skipped"]
    (waiting,) = [item for item in shown if item["status"] == "pending"]
    assert "another occurrence was waiting" in skipped["error"]
    wait_for("the wait to be logged", lambda: "waits for the trigger's unfinished run" in stack.output, timeout=10)
    assert len(agent.runs("buffered")) == 1, "nothing runs beside the running run"

    hold.set()
    assert api.finished("buffered", running, timeout=15)["status"] == "completed"
    done = api.finished("buffered", waiting["id"], timeout=90)
    assert (done["status"], done["kind"]) == ("completed", "backfill")
    _, second = agent.runs("buffered")
    assert second.body["invocationId"] == waiting["id"]
    assert parse_iso(done["startedAt"]) >= parse_iso(
        api.ok("GET", f"{BASE}/buffered/invocations/{running}")["completedAt"]
    )


def test_run_now_then_rerun(api: Api, agent: RecordingAgent) -> None:
    api.ok("POST", BASE, {"id": "manual", "name": "Manual", "cronExpression": NEVER}, expect=201)

    accepted = api.ok("POST", f"{BASE}/manual/run", expect=202, headers={"Idempotency-Key": "press-1"})
    repeated = api.ok("POST", f"{BASE}/manual/run", expect=202, headers={"Idempotency-Key": "press-1"})
    assert repeated["invocationId"] == accepted["invocationId"]
    first = accepted["invocationId"]
    wait_for("the run-now call", lambda: [r for r in agent.runs("manual") if r.body["invocationId"] == first], 15)
    done = api.finished("manual", first, timeout=10)
    assert (done["status"], done["kind"]) == ("completed", "manual")
    assert [attempt["httpStatus"] for attempt in done["attempts"]] == [200]

    again = api.ok("POST", f"{BASE}/manual/invocations/{first}/rerun", expect=202)["invocationId"]
    assert again != first
    rerun = api.finished("manual", again, timeout=15)
    assert (rerun["status"], rerun["kind"]) == ("completed", "rerun")
    assert [run.body["invocationId"] for run in agent.runs("manual")] == [first, again]


def test_cancel_stops_a_waiting_run_and_a_cancelled_run_can_be_rerun(api: Api, agent: RecordingAgent) -> None:
    run_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=10)
    api.ok("POST", BASE, {"id": "cancel-me", "name": "Cancel me", "runAt": iso(run_at)}, expect=201)
    pending = wait_for("the claimed occurrence to be recorded", lambda: api.invocations("cancel-me"), timeout=10)[0]
    assert pending["status"] == "pending"

    cancelled = api.ok("POST", f"{BASE}/cancel-me/invocations/{pending['id']}/cancel")
    assert cancelled["status"] == "cancelled"
    assert api.ok("POST", f"{BASE}/cancel-me/invocations/{pending['id']}/cancel")["status"] == "cancelled"
    time.sleep(max(0.0, run_at.timestamp() + 3 - time.time()))
    assert agent.runs("cancel-me") == []
    assert api.invocation("cancel-me", pending["id"])["status"] == "cancelled"

    rerun = api.ok("POST", f"{BASE}/cancel-me/invocations/{pending['id']}/rerun", expect=202)["invocationId"]
    done = api.finished("cancel-me", rerun, timeout=15)
    assert done["status"] == "completed"
    assert [run.body["invocationId"] for run in agent.runs("cancel-me")] == [rerun]
    status, body = api.call("POST", f"{BASE}/cancel-me/invocations/{done['id']}/cancel", auth=token())
    assert status == 409, body


def test_authorizer_and_tenant_checks(api: Api) -> None:
    status, body = api.call("GET", BASE)
    assert (status, body) == (401, {"message": "Unauthorized"})
    forged = jwt.encode({"sub": "mallory", "tenant_id": "acme", "roles": ["admin"], "exp": time.time() + 60}, "x" * 32)
    assert api.call("GET", BASE, auth=forged) == (401, {"message": "Unauthorized"})
    expired = token(exp=int(time.time()) - 10)
    assert api.call("GET", BASE, auth=expired) == (401, {"message": "Unauthorized"})

    status, body = api.call("GET", BASE, auth=token(tenant="globex"))
    assert status == 403, body
    assert body["error"]["code"] == "forbidden"
    viewer = token(roles=("viewer",))
    assert api.call("GET", BASE, auth=viewer)[0] == 200
    assert api.call("POST", BASE, {"name": "x", "cronExpression": NEVER}, auth=viewer)[0] == 403
    status, document = api.call("GET", "/openapi.json")
    assert status == 200
    assert document["info"]["title"] == "Sundial"
    # With a secret of its own, the stack signs no development tokens for the console.
    assert api.call("GET", "/console/config.json")[1]["devSignIn"] is False
    minted = api.call("POST", "/console/dev-token", {"tenant": "acme", "sub": "mallory", "roles": "admin"})
    assert minted == (401, {"message": "Unauthorized"})


def test_agent_failing_twice_then_succeeding_shows_three_attempts(
    api: Api, agent: RecordingAgent, background: Background, stack: StackProcess
) -> None:
    invocation_id = background.flaky_invocation
    done = api.finished("flaky", invocation_id, timeout=70)
    assert done["status"] == "completed", done
    assert [(a["number"], a["outcome"], a["httpStatus"]) for a in done["attempts"]] == [
        (1, "retryable_error", 500),
        (2, "retryable_error", 500),
        (3, "succeeded", 200),
    ]
    calls = agent.runs("flaky")
    assert [call.headers["Idempotency-Key"] for call in calls] == [f"{invocation_id}:{n}" for n in (1, 2, 3)]
    first_gap, second_gap = calls[1].at - calls[0].at, calls[2].at - calls[1].at
    assert 10 <= first_gap <= 10 * 1.3 + 1.5, first_gap
    assert 20 <= second_gap <= 20 * 1.3 + 1.5, second_gap
    scheduled = done["scheduledFor"]
    assert f"run flaky (acme) for {scheduled}: attempt 2 failed, retrying in" in stack.output
    # The Attempt step records the run before the stack logs the step's result: wait for the line.
    last = f"run flaky (acme) for {scheduled}: attempt 3 succeeded, completed"
    wait_for("the last attempt's log line", lambda: last in stack.output or None, timeout=10)


def test_cron_trigger_fires_on_consecutive_minutes_without_doubles(
    api: Api, agent: RecordingAgent, background: Background
) -> None:
    def two_consecutive_minutes() -> list[datetime] | None:
        minutes = sorted({parse_iso(run.body["scheduledFor"]) for run in agent.runs("every-minute")})
        pairs = [(a, b) for a, b in itertools.pairwise(minutes) if b - a == timedelta(minutes=1)]
        return list(pairs[0]) if pairs else None

    first, second = wait_for("runs on two consecutive minutes", two_consecutive_minutes, timeout=150, interval=1)
    time.sleep(2 * float(TICK_SECONDS) + 1)  # room for a duplicate of the second one
    api.ok("DELETE", f"{BASE}/every-minute", expect=204)

    runs = agent.runs("every-minute")
    for minute in (first, second):
        matching = [run for run in runs if run.body["scheduledFor"] == iso(minute)]
        assert len(matching) == 1, [run.body for run in matching]
        if minute >= background.cron_created + timedelta(seconds=3):
            assert minute.timestamp() <= matching[0].at <= minute.timestamp() + 2
    assert len({run.body["invocationId"] for run in runs}) == len(runs)


def test_a_taken_port_is_reported_clearly(agent: RecordingAgent, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = int(taken.getsockname()[1])
        stack = StackProcess(agent.url, tmp_path, port=port)
        code = stack.launch().wait(timeout=60)
    time.sleep(0.1)  # the reader thread drains the last line
    assert code == 1, stack.output
    assert f"port {port} is already in use; set PORT=" in stack.output
    assert READY not in stack.output


def test_triggers_and_invocations_survive_a_restart(agent: RecordingAgent, tmp_path: Path) -> None:
    stack = StackProcess(agent.url, tmp_path)
    stack.start()
    try:
        api = Api(stack.url)
        created = api.ok("POST", BASE, {"id": "survivor", "name": "Survivor", "cronExpression": NEVER}, expect=201)
        invocation_id = api.ok("POST", f"{BASE}/survivor/run", expect=202)["invocationId"]
        assert api.finished("survivor", invocation_id, timeout=15)["status"] == "completed"
    finally:
        code = stack.stop()
    assert code == 0, stack.output
    assert "saved 2 triggers-table" in stack.output  # the trigger and the dispatcher's due-shard marker

    stack.start()
    try:
        api = Api(stack.url)
        again = api.ok("GET", f"{BASE}/survivor")
        kept = ("id", "name", "cronExpression", "createdBy", "createdAt", "nextRunAt")
        assert {key: again[key] for key in kept} == {key: created[key] for key in kept}
        assert api.invocation("survivor", invocation_id)["status"] == "completed"
    finally:
        assert stack.stop() == 0, stack.output


def test_nothing_acknowledged_is_lost_when_the_stack_is_killed(agent: RecordingAgent, tmp_path: Path) -> None:
    """SIGKILL, no chance to save: every trigger a 201 acknowledged is back, no finished run reaches the
    agent again, and a run that was waiting for its time runs once, on time (SPEC §4)."""
    stack = StackProcess(agent.url, tmp_path)
    stack.start()
    try:
        api = Api(stack.url)
        api.ok("POST", BASE, {"id": "crash-done", "name": "Done before the crash", "cronExpression": NEVER}, expect=201)
        done = api.ok("POST", f"{BASE}/crash-done/run", expect=202)["invocationId"]
        assert api.finished("crash-done", done, timeout=15)["status"] == "completed"
        run_at = (datetime.now(UTC) + timedelta(seconds=25)).replace(microsecond=0)
        waiting = {"id": "crash-waiting", "name": "Waiting at the crash", "runAt": iso(run_at)}
        api.ok("POST", BASE, waiting, expect=201)
        wait_for("the waiting run's record", lambda: api.invocations("crash-waiting") or None, 15)
        acknowledged = [f"crash-{number}" for number in range(5)]
        for trigger_id in acknowledged:  # killed right after the last 201: nothing to wait for
            api.ok("POST", BASE, {"id": trigger_id, "name": trigger_id, "cronExpression": NEVER}, expect=201)
    finally:
        assert stack.process is not None
        stack.process.kill()
        stack.process.wait(timeout=30)

    stack.start()
    try:
        api = Api(stack.url)
        for trigger_id in ["crash-done", "crash-waiting", *acknowledged]:
            assert api.ok("GET", f"{BASE}/{trigger_id}")["id"] == trigger_id
        assert api.invocation("crash-done", done)["status"] == "completed"
        [resumed] = api.invocations("crash-waiting")
        finished = api.finished("crash-waiting", resumed["id"], timeout=60)
        assert finished["status"] == "completed", finished
        [call] = agent.runs("crash-waiting")
        assert call.at >= run_at.timestamp(), "the resumed run waited for its time"
        time.sleep(TICK_SECONDS_FLOAT * 2)  # two more ticks: a re-delivery would have happened by now
        assert len(agent.runs("crash-done")) == 1, "a finished run reached the agent again"
        assert len(agent.runs("crash-waiting")) == 1
    finally:
        assert stack.stop() == 0, stack.output


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["kill-INT", "kill-TERM"])
def test_make_dev_stops_and_saves_on_a_signal_to_make(agent: RecordingAgent, tmp_path: Path, signum: int) -> None:
    """`kill -INT` or `kill -TERM` on the `make dev` process, not only Ctrl-C in its terminal."""
    stack = StackProcess(agent.url, tmp_path)
    # As from a terminal: a background job of a non-interactive shell (a CI runner's, say) starts with
    # SIGINT ignored, exec keeps it so, and a make that ignores SIGINT rightly goes on running.
    stack.launch_command = ["env", "--default-signal=INT", "make", "--no-print-directory", "dev", "PORT=0"]
    stack.start()
    api = Api(stack.url)
    api.ok("POST", BASE, {"id": "kept", "name": "Kept", "cronExpression": NEVER}, expect=201)
    assert stack.process is not None
    stack.process.send_signal(signum)
    try:
        stack.process.wait(timeout=120)
    except subprocess.TimeoutExpired:
        stack.process.kill()  # the stack notices its parent is gone, and stops
        raise AssertionError(f"make dev did not stop on {signum!r}; its output:\n{stack.output}") from None
    wait_for("the stack to save and stop", lambda: "saved 2 triggers-table" in stack.output or None, 60)

    stack.launch_command = [sys.executable, "-m", "sundial_local"]
    stack.start()
    try:
        assert Api(stack.url).ok("GET", f"{BASE}/kept")["name"] == "Kept"
    finally:
        assert stack.stop() == 0, stack.output


def test_an_execution_stopped_behind_sundials_back_is_closed_by_the_local_watcher(
    agent: RecordingAgent, tmp_path: Path
) -> None:
    """Stopped straight in (emulated) Step Functions, as from the console: the watcher path closes it."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        moto_port = probe.getsockname()[1]
    stack = StackProcess(agent.url, tmp_path)
    stack.env["MOTO_PORT"] = str(moto_port)
    stack.start()
    try:
        api = Api(stack.url)
        run_at = (datetime.now(UTC) + timedelta(seconds=60)).replace(microsecond=0)
        api.ok("POST", BASE, {"id": "stopped-outside", "name": "Stopped outside", "runAt": iso(run_at)}, expect=201)
        [waiting] = wait_for("the waiting run", lambda: api.invocations("stopped-outside") or None, 15)
        sfn = boto3.client(
            "stepfunctions",
            endpoint_url=f"http://127.0.0.1:{moto_port}",
            region_name="us-east-1",
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
        sfn.stop_execution(executionArn=waiting["executionArn"], cause="stopped in the console")
        closed = api.finished("stopped-outside", waiting["id"], timeout=30)
        assert (closed["status"], closed["error"]) == ("cancelled", "execution stopped")
        assert agent.runs("stopped-outside") == []
    finally:
        assert stack.stop() == 0, stack.output


def test_a_write_that_cannot_be_saved_is_not_acknowledged(agent: RecordingAgent, tmp_path: Path) -> None:
    """A 201 means the trigger is on disk: when the state file cannot be written the API answers 503."""
    stack = StackProcess(agent.url, tmp_path)
    stack.start()
    try:
        api = Api(stack.url)
        blocker = tmp_path / "state.json.partial"
        blocker.mkdir()  # every save now fails: its temporary file's path is a folder
        status, refused = api.call(
            "POST", BASE, {"id": "unsaved", "name": "Unsaved", "cronExpression": NEVER}, auth=token()
        )
        assert (status, refused["error"]["code"]) == (503, "unavailable"), refused
        blocker.rmdir()
        api.ok("POST", BASE, {"id": "saved", "name": "Saved", "cronExpression": NEVER}, expect=201)
        on_disk = json.loads((tmp_path / "state.json").read_text())["tables"]["triggers"]
        assert any(item["pk"]["S"] == "acme#saved" for item in on_disk)
    finally:
        assert stack.stop() == 0, stack.output

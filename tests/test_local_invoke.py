"""`python -m sundial_local.invoke` runs each function on its events/ sample against throwaway emulated AWS."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sundial.settings import get_settings

from sundial_local import invoke
from tests.conftest import EVENTS


@pytest.fixture(autouse=True)
def isolated_environment() -> Iterator[None]:
    """invoke sets the functions' environment (tables, agent URL, powertools switches); undo it afterwards."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, Any, str]:
    code = invoke.main(list(args))
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if captured.out else None, captured.err


def test_every_function_has_a_sample_event() -> None:
    samples = {path.name for path in EVENTS.glob("*.json")}
    assert {"api_create_trigger.json", "dispatch_tick.json"} <= samples
    assert {f"runner_{step}.json" for step in ("prepare", "attempt", "finalize", "execution_ended")} <= samples
    platform = {"project_deleted", "agent_deleted", "branch_deleted", "user_removed"}
    assert {f"platform_{name}.json" for name in platform} <= samples


def test_api_creates_the_sample_trigger(capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = run(capsys, "api", str(EVENTS / "api_create_trigger.json"))
    assert code == 0
    assert result["statusCode"] == 201
    created = json.loads(result["body"])
    assert created["id"] == "weekday-report"
    next_run = datetime.fromisoformat(created["nextRunAt"]).astimezone(ZoneInfo("Europe/Berlin"))
    assert (next_run.hour, next_run.minute, next_run.weekday() < 5) == (9, 0, True)


def test_dispatch_ticks_over_the_sample_trigger(capsys: pytest.CaptureFixture[str]) -> None:
    code, result, notes = run(capsys, "dispatch", str(EVENTS / "dispatch_tick.json"))
    assert code == 0
    assert result["stopped_early"] is False
    assert "seeded: the trigger of events/api_create_trigger.json" in notes


def test_prepare_records_the_sample_occurrence_as_pending(capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = run(capsys, "runner-prepare", str(EVENTS / "runner_prepare.json"))
    assert code == 0
    sample = json.loads((EVENTS / "runner_prepare.json").read_text())["input"]
    assert {key: result[key] for key in sample} == sample
    assert (result["outcome"], result["attemptNumber"]) == ("pending", 0)
    assert result["attemptTimeoutSeconds"] == 780 + 60


def test_attempt_calls_the_demo_agent(capsys: pytest.CaptureFixture[str]) -> None:
    code, result, notes = run(capsys, "runner-attempt", str(EVENTS / "runner_attempt.json"))
    assert code == 0
    assert (result["outcome"], result["attemptNumber"]) == ("completed", 1)
    assert "seeded: the pending invocation of events/runner_prepare.json" in notes


def test_finalize_records_the_failure(capsys: pytest.CaptureFixture[str]) -> None:
    code, result, _ = run(capsys, "runner-finalize", str(EVENTS / "runner_finalize.json"))
    assert code == 0
    assert result["outcome"] == "failed"
    assert result["failure"]["Error"] == "States.Timeout"


def test_watcher_closes_the_stopped_sample_run(capsys: pytest.CaptureFixture[str]) -> None:
    """Called directly: the watcher logs a warning, which Lambda-style logging writes to stdout."""
    result = invoke.invoke("runner-watcher", EVENTS / "runner_execution_ended.json")
    assert result == {"invocationId": "20261127T080000Z-ae2696afa293ec076878", "status": "cancelled", "closed": True}
    assert "seeded: the pending invocation of events/runner_prepare.json" in capsys.readouterr().err


def test_sweep_leaves_the_just_seeded_run_alone(capsys: pytest.CaptureFixture[str]) -> None:
    """The seeded invocation was recorded a moment ago: younger than the sweep's grace, so not even asked about."""
    result = invoke.invoke("runner-sweep", EVENTS / "dispatch_tick.json")
    assert result == {"lookedAt": 0, "closed": [], "errors": 0, "stoppedEarly": False}
    assert "seeded: the pending invocation of events/runner_prepare.json" in capsys.readouterr().err


@pytest.mark.parametrize("sample", ["project_deleted", "agent_deleted", "branch_deleted", "user_removed"])
def test_each_platform_event_starts_a_cascade_of_the_sample_trigger(
    capsys: pytest.CaptureFixture[str], sample: str
) -> None:
    code, result, notes = run(capsys, "platform-events", str(EVENTS / f"platform_{sample}.json"))
    assert code == 0
    assert result["cascadeId"].startswith("csc_")
    assert f"stopped execution {result['cascadeId']}, which the call started" in notes


def test_a_platform_event_it_cannot_read_fails_as_lambda_reports_it(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    event = json.loads((EVENTS / "platform_project_deleted.json").read_text())
    del event["detail"]["projectId"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(event))
    code, result, _ = run(capsys, "platform-events", str(bad))
    assert code == 1
    assert result == {"errorType": "PlatformEventError", "errorMessage": "detail.projectId: Field required"}


def test_a_function_error_is_reported_as_lambda_reports_it(capsys: pytest.CaptureFixture[str]) -> None:
    code, result, notes = run(capsys, "runner-attempt", str(EVENTS / "runner_attempt.json"), "--empty")
    assert code == 1
    assert set(result) == {"errorType", "errorMessage"}
    assert result["errorType"] == "NotFoundError"
    assert "not found" in result["errorMessage"]
    assert "Traceback" in notes


def test_a_missing_event_file_is_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, notes = run(capsys, "dispatch", str(EVENTS / "no_such_event.json"))
    assert code == 1
    assert "cannot read the event" in notes

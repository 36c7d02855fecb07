"""The decorator stack every entry point wears: its Tracer is built by the first call, never by an import."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from sundial import observability

from tests.conftest import lambda_context


def test_importing_a_handler_does_not_import_the_xray_sdk() -> None:
    probe = "import sys, dispatch_handler, runner_handler, api_handler; print('aws_xray_sdk' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


@pytest.fixture
def fresh_tracer() -> Iterator[None]:
    observability.tracer.cache_clear()
    yield
    observability.tracer.cache_clear()


@pytest.mark.filterwarnings("ignore:No application metrics to publish")
@pytest.mark.usefixtures("fresh_tracer")
def test_the_first_call_builds_the_tracer_and_every_call_runs_inside_its_handler_segment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    traced: list[str] = []

    class RecordingTracer:
        def __init__(self, service: str) -> None:
            traced.append(f"built for {service}")

        def capture_lambda_handler(self, handler: Any) -> Any:
            def segment(event: Any, context: Any) -> Any:
                traced.append("segment")
                return handler(event, context)

            return segment

    monkeypatch.setattr(observability, "Tracer", RecordingTracer)

    @observability.entry_point(correlation_id_path="id")
    def handler(event: dict[str, Any], _context: Any) -> str:
        return str(event["id"])

    assert traced == []
    assert [handler({"id": n}, lambda_context()) for n in (1, 2)] == ["1", "2"]
    assert traced == ["built for sundial", "segment", "segment"]

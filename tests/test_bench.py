"""The benchmarks still run on the code as it is: a small run of each, checked for what it promises.

`make bench` is not part of `make test`, so without these a change of the stores or keys could leave
it broken until someone next measured.
"""

from __future__ import annotations

import json

import pytest

from bench import cascade_bench, dispatch_bench, dispatch_cpu_bench, herd_bench, list_bench, runner_bench
from sundial_local.template import asl_path


@pytest.mark.slow
def test_the_dispatch_bench_starts_a_thousand_occurrences_once_each() -> None:
    figures = dispatch_bench.run(1000, 1.0)
    assert (figures["dispatched"], figures["duplicates"], figures["losses"], figures["errors"]) == (1000, 0, 0, 0)
    assert figures["calls_per_occurrence"]["dynamodb_writes"] == 2.0
    assert figures["calls_per_occurrence"]["start_execution"] == 1.0


@pytest.mark.slow
def test_the_real_path_bench_dispatches_through_the_sdk_with_two_writes_and_one_start_each() -> None:
    figures = dispatch_cpu_bench.measure(300)
    assert figures["dispatched"] == 300
    calls = figures["calls"]
    assert (calls["UpdateItem"], calls["StartExecution"], calls["Query"]) == (600, 300, dispatch_cpu_bench.SHARDS)
    assert figures["cpu_ms_per_occurrence"] > 0


@pytest.mark.slow
def test_the_runner_bench_measures_a_first_try_success_in_five_transitions() -> None:
    first_try = runner_bench.measure(runner_bench.SCENARIOS[0])
    assert (first_try.final_status, first_try.state_transitions, first_try.agent_calls) == ("completed", 5, 1)


@pytest.mark.slow
def test_the_list_bench_times_a_full_page_through_the_handler() -> None:
    figures = list_bench.measure(requests=2)
    assert figures["rows"] == 50
    assert 0 < figures["handler_own_ms"] < figures["handler_ms"]


def test_the_dispatch_doc_shows_the_figures_in_the_results() -> None:
    results = json.loads(dispatch_bench.RESULTS.read_text())
    doc = dispatch_bench.DOC.read_text()
    assert dispatch_bench.doc_with_table(doc, results) == doc, "run make bench (or python -m bench dispatch_bench)"


def test_the_herd_bench_models_the_throttle_retrier_every_lambda_task_has() -> None:
    """The bench reads the Attempt Task's retrier from the file; Prepare and Finalize must retry alike."""
    asl = json.loads(asl_path().read_text())
    tasks = [name for name, state in asl["States"].items() if state["Type"] == "Task"]
    modelled = herd_bench.current_retrier()
    assert modelled["ErrorEquals"] == [herd_bench.THROTTLE_ERROR]
    assert modelled["JitterStrategy"] == "FULL"
    for name in tasks:
        assert herd_bench.throttle_retrier(asl, name) == modelled, name
    # Throttled long enough that a run is not given up before the default catch-up window has passed.
    assert herd_bench.Retrier.from_asl(modelled).mean_budget_seconds() > 1.5 * herd_bench.DEFAULT_CATCH_UP_WINDOW


def test_the_herd_drains_without_a_throttling_failure_with_the_current_retrier() -> None:
    """100x the concurrency at once (as 100,000 wake-ups at 1,000, scaled down): none fails; the old retrier did."""
    herd = herd_bench.Herd(runs=5_000, attempt_seconds=10.0, concurrency=50)
    after = herd_bench.simulate(herd, herd_bench.Retrier.from_asl(herd_bench.current_retrier()), "after")
    before = herd_bench.simulate(herd, herd_bench.Retrier.from_asl(herd_bench.BEFORE_RETRIER), "before")
    assert (after.failed_by_throttling, after.started) == (0, 5_000)
    assert after.drain_vs_limit < 1.25
    assert before.failed_by_throttling > 2_500


def test_the_dispatch_figures_were_measured_with_the_templates_dispatch_settings() -> None:
    """bench/results/dispatch.json must come from the settings template.yaml deploys (run make bench again)."""
    results = json.loads(dispatch_bench.RESULTS.read_text())
    assert results["model"]["settings"] == dispatch_bench.settings_text(dispatch_bench.template_settings())


def test_the_cascade_bench_deletes_every_trigger_of_the_scope_within_the_function_timeout() -> None:
    """A small cascade through the real Page handler: exact counts, the survivor, and a Page invocation
    that stops a minute before the timeout when the modelled calls would outlast it."""
    row = cascade_bench.measure(1_200)
    assert (row["state"], row["found"], row["deleted"]) == ("completed", 1_200, 1_200)
    assert (row["invocations_cancelled"], row["executions_stopped"]) == (cascade_bench.RUNS, cascade_bench.RUNS)
    assert row["other_project_survives"] is True
    assert row["aws_calls"]["DeleteItem"] == 1_200
    assert row["state_transitions"] == 2 * row["page_invocations"] + row["settle_pauses"] + 1
    assert row["settle_pauses"] == 1
    assert row["least_time_left_seconds"] > 0


def test_the_cascade_bench_splits_a_long_pass_over_page_invocations(monkeypatch: pytest.MonkeyPatch) -> None:
    """With every call made to cost a second, a page of 200 takes over 200 s: a 300 s invocation holds
    at most two, so the first pass needs two invocations (and the second pass a third)."""
    monkeypatch.setattr(cascade_bench, "LATENCY_MS", dict.fromkeys(cascade_bench.LATENCY_MS, 1000.0))
    row = cascade_bench.measure(600)
    assert row["deleted"] == 600
    assert row["page_invocations"] == 3

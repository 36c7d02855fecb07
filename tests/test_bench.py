"""The benchmarks still run on the code as it is: a small run of each, checked for what it promises.

`make bench` is not part of `make test`, so without these a change of the stores or keys could leave
it broken until someone next measured.
"""

from __future__ import annotations

import json

import pytest

from bench import dispatch_bench, list_bench, runner_bench


@pytest.mark.slow
def test_the_dispatch_bench_starts_a_thousand_occurrences_once_each() -> None:
    figures = dispatch_bench.run(1000, 1.0)
    assert (figures["dispatched"], figures["duplicates"], figures["losses"], figures["errors"]) == (1000, 0, 0, 0)
    assert figures["calls_per_occurrence"]["dynamodb_writes"] == 2.0
    assert figures["calls_per_occurrence"]["start_execution"] == 1.0


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

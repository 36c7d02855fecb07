"""Racing writers: dispatchers against each other, and the API's immediate claim and edits against a tick.

Real threads on one moto backend (requests serialised, as DynamoDB applies each conditional write
atomically); moto records executions without running them (see tests/dispatch_support.py).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
from pynamodb.exceptions import DoesNotExist
from sundial.contracts.api import TriggerPatch
from sundial.domain.naming import scheduled_execution_name
from sundial.services.dispatcher import TickReport
from sundial.services.triggers import delete_trigger, update_trigger

from tests.conftest import BASE, START, ApiClient, FakeClock
from tests.dispatch_support import (
    EDITOR,
    PATH,
    DispatchEnv,
    assert_exactly_once,
    at,
    create,
    dispatch_env,
    dispatcher,
    dynamodb_client,
    executions,
    seed_many,
    stored,
)

SCHEDULED = "2026-11-26T15:00:00Z"


@pytest.fixture
def env(clock: FakeClock) -> Iterator[DispatchEnv]:
    clock.set(START - timedelta(minutes=10))
    # Two shards keep moto's queries (a scan of the whole table each) cheap; the merge still runs.
    with dispatch_env(clock, DISPATCH_CONCURRENCY=4, DUE_SHARD_COUNT=2) as built:
        yield built


@pytest.fixture
def api(env: DispatchEnv, monkeypatch: pytest.MonkeyPatch) -> ApiClient:
    import api_handler

    monkeypatch.setattr(api_handler, "deps", lambda: env.deps)
    return ApiClient()


def run_together(*actions: Callable[[], Any]) -> list[Any]:
    """Start every action on its own thread at the same moment; their results, in order."""
    barrier = threading.Barrier(len(actions))
    results: list[Any] = [None] * len(actions)
    failures: list[BaseException] = []

    def run(index: int, action: Callable[[], Any]) -> None:
        barrier.wait()
        try:
            results[index] = action()
        except BaseException as error:
            failures.append(error)

    threads = [threading.Thread(target=run, args=item) for item in enumerate(actions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures, failures
    return results


@pytest.mark.slow
@pytest.mark.parametrize("racers", [2, 3, 4])
def test_racing_dispatchers_start_each_of_500_occurrences_exactly_once(env: DispatchEnv, racers: int) -> None:
    trigger_ids = seed_many(env, 500, cron_expression="0 15 * * *")
    env.clock.set(START - timedelta(seconds=100))

    reports: list[TickReport] = run_together(*(dispatcher(env).tick for _ in range(racers)))

    assert_exactly_once(env, {(trigger, SCHEDULED) for trigger in trigger_ids})
    assert sum(report.counts["dispatched"] for report in reports) == 500
    assert sum(report.counts["errors"] + report.counts["already_dispatched"] for report in reports) == 0
    assert all(report.counts["dispatched"] > 0 for report in reports), "every racer won some claims"
    assert sum(report.counts["claim_conflicts"] for report in reports) > 0
    left = [trigger for trigger in trigger_ids if stored(trigger).claim_name is not None]
    assert left == []


def before_first_call(env: DispatchEnv, operation: str, action: Callable[[], Any]) -> list[str]:
    """Run `action` once, just before the first `operation` call from any client; returns who triggered it."""
    fired: list[str] = []
    lock = threading.Lock()

    def hook(model: Any, **_: Any) -> None:
        if model.name != operation:
            return
        with lock:
            if fired:
                return
            fired.append(threading.current_thread().name)
        action()

    for client in (dynamodb_client(), env.sfn):
        client.meta.events.register_first("before-call.*.*", hook)
    return fired


def test_a_trigger_created_with_its_next_run_inside_the_lookahead_is_claimed_at_once(
    env: DispatchEnv, api: ApiClient
) -> None:
    env.clock.set(START - timedelta(seconds=30))
    created = api.request("POST", BASE, {"name": "Soon", "runAt": at(START)})

    assert created.status == 201, created.body
    assert created.body["nextRunAt"] == SCHEDULED
    (started,) = executions(env)
    record = stored(created.body["id"])
    assert started["name"] == scheduled_execution_name("acme", created.body["id"], record.incarnation, 1, START)
    assert (record.next_run_at, record.claim_name, record.due_at) == (None, None, None)

    later = dispatcher(env).tick()
    assert later.counts["dispatched"] == 0
    assert_exactly_once(env, {(created.body["id"], SCHEDULED)})


def test_a_trigger_rescheduled_into_the_lookahead_is_claimed_at_once_under_its_new_version(
    env: DispatchEnv, api: ApiClient
) -> None:
    env.clock.set(START - timedelta(seconds=90))
    created = api.request("POST", BASE, {"name": "Daily", "cronExpression": "0 16 * * *"})
    assert executions(env) == []

    patched = api.request("PATCH", f"{BASE}/{created.body['id']}", {"cronExpression": "0 15 * * *"})

    assert patched.status == 200, patched.body
    (started,) = executions(env)
    assert started["name"] == scheduled_execution_name(
        "acme", created.body["id"], stored(created.body["id"]).incarnation, 2, START
    )
    assert started["input"]["scheduleVersion"] == 2
    assert dispatcher(env).tick().counts["dispatched"] == 0
    assert_exactly_once(env, {(created.body["id"], SCHEDULED)})


def test_a_tick_racing_the_api_between_its_write_and_its_claim_does_not_double_the_run(
    env: DispatchEnv,
) -> None:
    env.clock.set(START - timedelta(seconds=30))
    tick_reports: list[TickReport] = []

    def tick_in_another_process() -> None:
        run_together(lambda: tick_reports.append(dispatcher(env).tick()))

    # The API stores the trigger (PutItem), then claims it (UpdateItem): a whole tick runs in between.
    fired = before_first_call(env, "UpdateItem", tick_in_another_process)
    trigger_id = create(env, run_at=at(START))

    assert fired == [threading.current_thread().name], "the API's own claim was the first UpdateItem"
    assert tick_reports[0].counts["dispatched"] == 1
    assert_exactly_once(env, {(trigger_id, SCHEDULED)})


def test_triggers_created_while_ticks_run_start_exactly_once(env: DispatchEnv) -> None:
    env.clock.set(START - timedelta(seconds=100))
    created: list[str] = []
    done = threading.Event()

    def create_all() -> None:
        for index in range(40):
            created.append(create(env, f"soon {index}", run_at=at(START + timedelta(seconds=index % 20))))
        done.set()

    def tick_until_done() -> int:
        ticks = 0
        while not done.is_set() or ticks < 1:
            dispatcher(env).tick()
            ticks += 1
            done.wait(0.01)  # ticks back to back, without re-reading an unchanged index in a tight loop
        return ticks

    run_together(create_all, tick_until_done, tick_until_done)

    expected = {(trigger, at(START + timedelta(seconds=index % 20))) for index, trigger in enumerate(created)}
    assert_exactly_once(env, expected)


def test_a_reschedule_between_claim_and_start_supersedes_the_claimed_run(env: DispatchEnv) -> None:
    trigger_id = create(env, cron_expression="0 15 * * *")
    env.clock.set(START - timedelta(seconds=90))

    def reschedule() -> None:
        # Still fires at 15:00, so the API claims 15:00 again, under schedule version 2.
        update_trigger(env.deps, EDITOR, PATH, trigger_id, TriggerPatch(cron_expression="0 15,16 * * *"))

    before_first_call(env, "StartExecution", reschedule)
    report = dispatcher(env).tick()

    versions = sorted(item["input"]["scheduleVersion"] for item in executions(env))
    assert versions == [1, 2], "version 1 was started as claimed; the runner stands it down (superseded)"
    assert report.counts["claim_conflicts"] == 1, "its release found the claim gone"
    record = stored(trigger_id)
    assert (record.schedule_version, record.claim_name) == (2, None)
    assert record.next_run_at == START + timedelta(hours=1)
    assert record.due_at == "2026-11-26T16:00:00Z"


def test_a_delete_between_claim_and_start_leaves_the_trigger_deleted(env: DispatchEnv) -> None:
    trigger_id = create(env, cron_expression="0 15 * * *")
    env.clock.set(START - timedelta(seconds=90))
    before_first_call(env, "StartExecution", lambda: delete_trigger(env.deps, EDITOR, PATH, trigger_id))

    report = dispatcher(env).tick()

    assert report.counts["claim_conflicts"] == 1
    with pytest.raises(DoesNotExist):
        stored(trigger_id)
    (started,) = executions(env)
    assert started["input"]["triggerId"] == trigger_id, "started; the runner finds the trigger gone"

"""Cascades against running work (SPEC §7): the scope tombstone stands down runs claimed before the
cascade, a trigger created after it completed runs, the real cascade state machine in moto, a retried
page, and a cascade of 10,000 triggers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from moto.dynamodb.models import dynamodb_backends
from sundial.domain.cascade import CascadeScope
from sundial.services import cascades
from sundial.store import cascades as cascade_store
from sundial.store.records import TriggerRecord, trigger_pk

from sundial_local.config import ACCOUNT, REGION
from sundial_local.lambdas import routed_lambdas
from tests.cascade_support import drive
from tests.conftest import CASCADE_FUNCTION_ARNS, ApiClient, Stack
from tests.runner_support import (
    Harness,
    create_trigger,
    entered_states,
    history,
    runner_harness,
    wait_for_execution,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

AT = datetime(2026, 11, 26, 16, 0, tzinfo=UTC)
BULK = 10_000
AGENT = CascadeScope.agent("acme", "website", "reporter")


@pytest.fixture
def harness(stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    import cascade_handler

    monkeypatch.setattr(cascade_handler, "deps", lambda: stack.deps)
    with runner_harness(stack, monkeypatch) as built, routed_lambdas(CASCADE_FUNCTION_ARNS):
        yield built


def tombstone_only(stack: Stack, scope: CascadeScope, cascade_id: str) -> cascade_store.CascadeRecord:
    """A cascade accepted whose pages have not reached the trigger yet: its record and tombstone only."""
    record = cascade_store.new_record(scope, cascade_id, "api", stack.deps.now())
    assert cascade_store.create(record)
    cascade_store.raise_tombstone(record)
    return record


def test_a_run_claimed_before_a_cascade_and_starting_after_it_stands_down(harness: Harness, api: ApiClient) -> None:
    trigger = create_trigger(api, cronExpression="0 16 * * *")

    def accept_meanwhile(_execution_arn: str) -> None:
        tombstone_only(harness.stack, AGENT, "csc_race")

    harness.waits.hooks["WaitUntilScheduled"] = accept_meanwhile

    run = harness.run_scheduled("acme", trigger["id"], AT)

    invocation = run.invocation()
    assert (run.status, invocation.status) == ("SUCCEEDED", "cancelled")
    assert "csc_race" in (invocation.error or "")
    assert harness.agent.received == []


def test_a_trigger_created_after_the_cascade_completed_runs(harness: Harness, api: ApiClient) -> None:
    record = tombstone_only(harness.stack, AGENT, "csc_done")
    cascade_store.complete(record, harness.stack.deps.now())
    harness.stack.clock.advance(60)
    trigger = create_trigger(api, cronExpression="0 16 * * *")

    run = harness.run_scheduled("acme", trigger["id"], AT)

    assert (run.status, run.invocation().status) == ("SUCCEEDED", "completed")
    assert len(harness.agent.received) == 1


def test_the_cascade_state_machine_pages_waits_and_completes(harness: Harness, api: ApiClient) -> None:
    for number in range(3):
        create_trigger(api, id=f"t{number}", cronExpression="0 16 * * *")
    stack = harness.stack

    record = cascades.accept(stack.deps, AGENT, "csc_machine", "api")
    arn = f"{stack.settings.cascade_state_machine_arn.replace(':stateMachine:', ':execution:')}:csc_machine"
    described = wait_for_execution(stack.sfn, arn)

    assert described["status"] == "SUCCEEDED"
    assert entered_states(history(stack.sfn, arn)) == ["Page", "Done?", "Settle", "Page", "Done?", "Completed"]
    assert harness.waits.seconds(arn, "Settle") == [cascades.SETTLE_SECONDS]
    done = cascade_store.find("acme", record.cascade_id)
    assert done is not None
    assert (done.state, int(done.found), int(done.deleted)) == ("completed", 3, 3)
    assert list(TriggerRecord.scan(TriggerRecord.pk.startswith("acme#"))) == []


def test_a_page_retried_after_a_crash_counts_nothing_twice(
    stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    for number in range(5):
        create_trigger(api, id=f"t{number}", cronExpression="0 16 * * *")
        api.request("POST", f"/tenants/acme/projects/website/agents/reporter/scheduled-triggers/t{number}/run")
    record = tombstone_only(stack, AGENT, "csc_crash")
    real_commit = cascade_store.commit_page
    crashes: list[int] = []

    def crash_once(*args: object, **kwargs: object) -> bool:
        if not crashes:
            crashes.append(1)
            raise RuntimeError("Lambda timed out after deleting the page")
        return real_commit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(cascade_store, "commit_page", crash_once)
    with pytest.raises(RuntimeError):
        drive(stack, monkeypatch, "acme", record.cascade_id)
    drive(stack, monkeypatch, "acme", record.cascade_id)

    done = cascade_store.find("acme", record.cascade_id)
    assert done is not None
    assert (int(done.found), int(done.deleted), done.state) == (5, 5, "completed")
    # Cancelled before the crash: the retried page finds them final and counts them no more (never twice).
    assert int(done.invocations_cancelled) <= 5
    assert int(done.executions_stopped) <= 5


def _seed_bulk(stack: Stack, template_id: str, count: int) -> None:
    """Clone a trigger `count` times straight into moto's table: seeding is not what is measured."""
    table = dynamodb_backends[ACCOUNT][REGION].get_table(stack.settings.triggers_table)
    template = TriggerRecord.get(trigger_pk("acme", template_id), consistent_read=True).serialize()
    template.pop("due_shard", None)
    template.pop("due_at", None)
    for index in range(count):
        trigger_id = f"bulk-{index:05d}"
        item = {
            **template,
            "pk": {"S": trigger_pk("acme", trigger_id)},
            "trigger_id": {"S": trigger_id},
            "agent_trigger": {"S": f"reporter#{trigger_id}"},
        }
        table.put_item(item)


@pytest.mark.slow
def test_a_cascade_of_ten_thousand_triggers_completes_with_exact_counts(
    stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_trigger(api, id="template", cronExpression="0 16 * * *", enabled=False)
    _seed_bulk(stack, "template", BULK - 1)
    create_trigger(api, id="elsewhere", cronExpression="0 16 * * *")  # another project's: stays
    other = TriggerRecord.get(trigger_pk("acme", "elsewhere"))
    other.update(actions=[TriggerRecord.project_key.set("acme#shop"), TriggerRecord.project_id.set("shop")])
    record = tombstone_only(stack, CascadeScope.project("acme", "website"), "csc_big")
    monkeypatch.setattr(stack.deps, "settings", stack.deps.settings.model_copy(update={"cascade_page_size": 1000}))

    started = time.monotonic()
    pauses = drive(stack, monkeypatch, "acme", record.cascade_id)
    elapsed = time.monotonic() - started

    done = cascade_store.find("acme", record.cascade_id)
    assert done is not None
    assert (done.state, int(done.found), int(done.deleted)) == ("completed", BULK, BULK)
    assert pauses == [cascades.SETTLE_SECONDS]
    assert [str(t.trigger_id) for t in TriggerRecord.scan(TriggerRecord.pk.startswith("acme#"))] == ["elsewhere"]
    assert elapsed < timedelta(minutes=2).total_seconds()  # linear: a quadratic regression would not finish

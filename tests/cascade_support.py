"""Cascade test support: a cascade driven as its state machine would (the Page Task's handler called
until it says done, each pause recorded and the clock moved past it instead of slept), and a tenant
seeded with triggers in and near each of the four scopes."""

from __future__ import annotations

from typing import Any

import pytest
from sundial.store.records import InvocationRecord

from tests.api_support import DAILY, PROJECT_BASE, raw_trigger
from tests.conftest import BASE, ApiClient, Stack, lambda_context, token_claims

ADMIN = token_claims("carol", "[admin]")
OTHER_AGENT = "/tenants/acme/projects/website/agents/writer/scheduled-triggers"
OTHER_PROJECT = "/tenants/acme/projects/shop/agents/reporter/scheduled-triggers"
USER_BASE = "/tenants/acme/users/bob/scheduled-triggers"
# Where seed_scopes puts each trigger.
BASES = {
    "main-reporter": BASE,
    "feature-reporter": BASE,
    "main-writer": OTHER_AGENT,
    "shop-reporter": OTHER_PROJECT,
}
# scope kind -> (the admin route, its query, the seeded triggers inside the scope)
SCOPES = {
    "project": (PROJECT_BASE, {}, {"main-reporter", "feature-reporter", "main-writer"}),
    "agent": (BASE, {}, {"main-reporter", "feature-reporter"}),
    "ref": (PROJECT_BASE, {"ref": "feature/x"}, {"feature-reporter"}),
    "user": (USER_BASE, {}, {"main-reporter", "shop-reporter"}),
}
ALL = set(BASES)


def drive(stack: Stack, monkeypatch: pytest.MonkeyPatch, tenant_id: str, cascade_id: str) -> list[int]:
    """Run the cascade's pages to the end; returns the pauses it asked for, in seconds."""
    import cascade_handler

    monkeypatch.setattr(cascade_handler, "deps", lambda: stack.deps)
    step: dict[str, Any] = {"tenantId": tenant_id, "cascadeId": cascade_id}
    pauses: list[int] = []
    for _ in range(1000):
        step = cascade_handler.page_handler(step, lambda_context("sundial-cascade"))
        if step["done"]:
            return pauses
        if step["waitSeconds"]:
            pauses.append(step["waitSeconds"])
            stack.clock.advance(step["waitSeconds"])
    raise AssertionError("the cascade did not finish")


def create(api: ApiClient, base: str, trigger_id: str, **fields: Any) -> None:
    created = api.request("POST", base, {"id": trigger_id, **DAILY, **fields}, claims=ADMIN)
    assert created.status == 201, created.body


def run_now(api: ApiClient, base: str, trigger_id: str) -> str:
    started = api.request("POST", f"{base}/{trigger_id}/run", claims=ADMIN)
    assert started.status == 202, started.body
    return str(started.body["invocationId"])


def invocation(trigger_id: str, invocation_id: str) -> InvocationRecord:
    [found] = [record for record in InvocationRecord.scan() if record.invocation_id == invocation_id]
    assert found.trigger_id == trigger_id
    return found


def execution_status(stack: Stack, record: InvocationRecord) -> str:
    return str(stack.sfn.describe_execution(executionArn=record.execution_arn)["status"])


def seed_scopes(api: ApiClient) -> None:
    """One trigger inside each scope SCOPES names, and each also a near miss of another scope."""
    create(api, BASE, "main-reporter", runAsUserId="bob")
    create(api, BASE, "feature-reporter", ref="feature/x")
    create(api, OTHER_AGENT, "main-writer", runAsUserId="dana")
    create(api, OTHER_PROJECT, "shop-reporter", runAsUserId="bob", ref="feature/x")


def run_now_everywhere(api: ApiClient) -> dict[str, str]:
    """A pending run-now of every seeded trigger: trigger id -> invocation id. (In the API tests' stack,
    executions are recorded, not interpreted: each stays RUNNING until it is stopped.)"""
    return {trigger_id: run_now(api, base, trigger_id) for trigger_id, base in BASES.items()}


def assert_cascaded(stack: Stack, cascade_id: str, runs: dict[str, str], expected: set[str]) -> None:
    """The triggers in `expected` are gone, their runs cancelled by the cascade and their executions
    stopped; every other seeded trigger and its run are untouched."""
    for trigger_id in ALL:
        record = invocation(trigger_id, runs[trigger_id])
        if trigger_id in expected:
            assert raw_trigger(stack, trigger_id) is None
            assert record.status == "cancelled"
            assert cascade_id in (record.error or "")
            assert execution_status(stack, record) == "ABORTED"
        else:
            assert raw_trigger(stack, trigger_id) is not None
            assert record.status == "pending"
            assert execution_status(stack, record) == "RUNNING"

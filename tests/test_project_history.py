"""GET /tenants/{t}/projects/{p}/invocations: a project's history across triggers, deleted ones included."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import ApiClient, Stack, token_claims
from tests.runner_support import Harness, Reply, runner_harness, wait_for_execution

PROJECT = "/tenants/acme/projects/website"
HISTORY = f"{PROJECT}/invocations"


def agent_base(agent: str) -> str:
    return f"{PROJECT}/agents/{agent}/scheduled-triggers"


@pytest.fixture
def harness(stack: Stack, api: ApiClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    with runner_harness(stack, monkeypatch) as harness:
        yield harness


def run(api: ApiClient, harness: Harness, agent: str, trigger_id: str) -> str:
    """Create the trigger if needed, run it now, wait for the run to end; its invocation id."""
    base = agent_base(agent)
    if api.request("GET", f"{base}/{trigger_id}").status == 404:
        created = api.request("POST", base, {"id": trigger_id, "name": trigger_id, "cronExpression": "0 9 * * *"})
        assert created.status == 201, created.body
    accepted = api.request("POST", f"{base}/{trigger_id}/run")
    assert accepted.status == 202, accepted.body
    wait_for_execution(harness.stack.sfn, accepted.body["executionArn"])
    invocation_id: str = accepted.body["invocationId"]
    return invocation_id


def listed(api: ApiClient, **query: Any) -> tuple[list[str], str | None]:
    page = api.request("GET", HISTORY, query=query)
    assert page.status == 200, page.body
    return [item["id"] for item in page.body["data"]], page.body["nextCursor"]


def test_it_lists_every_trigger_of_the_project_newest_first_deleted_ones_too(
    harness: Harness, api: ApiClient, stack: Stack
) -> None:
    first = run(api, harness, "reporter", "daily")
    harness.agent.then(Reply(400, {"error": "bad prompt"}))
    stack.clock.advance(60)
    second = run(api, harness, "writer", "weekly")
    stack.clock.advance(60)
    third = run(api, harness, "reporter", "gone")
    assert api.request("DELETE", f"{agent_base('reporter')}/gone").status == 204

    assert listed(api) == ([third, second, first], None)
    assert listed(api, status="failed") == ([second], None)
    assert listed(api, agentId="reporter") == ([third, first], None)
    assert listed(api, triggerId="gone") == ([third], None), "a deleted trigger's history stays"
    assert listed(api, kind="manual", agentId="writer") == ([second], None)


def test_pages_follow_the_cursor_and_a_filter_keeps_its_place(harness: Harness, api: ApiClient, stack: Stack) -> None:
    ids = []
    for _ in range(5):
        ids.append(run(api, harness, "reporter", "daily"))
        stack.clock.advance(60)
    newest_first = ids[::-1]

    page, cursor = listed(api, limit=2)
    assert page == newest_first[:2]
    page, cursor = listed(api, limit=2, cursor=cursor)
    assert page == newest_first[2:4]
    page, cursor = listed(api, limit=2, cursor=cursor)
    assert (page, cursor) == (newest_first[4:], None)
    bounded, _ = listed(api, **{"from": "2026-11-26T15:01:00Z", "to": "2026-11-26T15:03:00Z"})
    assert bounded == newest_first[1:4]


def test_another_tenant_or_a_forged_cursor_sees_nothing(harness: Harness, api: ApiClient) -> None:
    run(api, harness, "reporter", "daily")
    foreign = api.request("GET", "/tenants/globex/projects/website/invocations", claims=token_claims(tenant="globex"))
    assert (foreign.status, foreign.body["data"]) == (200, [])
    assert api.request("GET", HISTORY, claims=token_claims(tenant="globex")).status == 403
    assert api.request("GET", HISTORY, query={"cursor": "bm90LWEtY3Vyc29y"}).status == 400
    assert api.request("GET", HISTORY, query={"status": "sleeping"}).status == 422
    assert api.request("GET", HISTORY, query={"triggerId": "not valid!"}).status == 422


def test_a_cursor_used_with_other_bounds_is_refused(harness: Harness, api: ApiClient, stack: Stack) -> None:
    """DynamoDB refuses a start key outside the query's range: the API says so as a 400, not a 500."""
    for _ in range(3):
        run(api, harness, "reporter", "daily")
        stack.clock.advance(60)
    _, cursor = listed(api, limit=1)
    assert cursor is not None
    narrowed = api.request("GET", HISTORY, query={"cursor": cursor, "to": "2026-11-26T14:00:00Z"})
    assert narrowed.status == 400, narrowed.body
    assert narrowed.body["error"]["details"][0]["field"] == "cursor"

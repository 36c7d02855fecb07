"""SPEC section 8 through the Lambda handler: claims from the authorizer context, every route by role,
who may change a trigger, runAsUserId rules, and tenant isolation (another tenant learns nothing)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import api_handler
import pytest
from sundial.contracts.api import TriggerCreate
from sundial.deps import Deps
from sundial.domain.auth import Principal
from sundial.domain.cascade import CascadeScope
from sundial.services import triggers
from sundial.settings import Settings
from sundial.store import cascades as cascade_store

from tests.api_support import (
    DAILY,
    PROJECT_BASE,
    assert_error,
    raw_trigger,
    scan,
    seed_invocation,
    trigger_path,
)
from tests.conftest import BASE, START, ApiClient, ApiResponse, Stack, make_settings, token_claims

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

T1 = trigger_path("t1")
ALICE = Principal("alice", "acme", frozenset({"editor"}))
ROLES = ("viewer", "editor", "admin")
SUBJECT_BY_ROLE = {"viewer": "victor", "editor": "alice", "admin": "carol"}


@dataclass(frozen=True)
class Seeded:
    pending: str
    finished: str
    cascade: str = "csc_seeded"


@pytest.fixture
def seeded(stack: Stack) -> Seeded:
    """Trigger t1 created by alice (an editor), with one pending and one finished invocation."""
    triggers.create_trigger(
        stack.deps,
        ALICE,
        triggers.AgentPath("acme", "website", "reporter"),
        TriggerCreate.model_validate({"id": "t1", **DAILY}),
    )
    pending = seed_invocation(stack, "t1", START - timedelta(minutes=1), "pending")
    finished = seed_invocation(stack, "t1", START - timedelta(days=1), "completed")
    # A finished cascade of another project, for its progress route.
    cascade = cascade_store.new_record(CascadeScope.project("acme", "retired"), "csc_seeded", "api", START)
    cascade.state = cascade_store.COMPLETED
    assert cascade_store.create(cascade)
    return Seeded(pending.invocation_id, finished.invocation_id, cascade.cascade_id)


@dataclass(frozen=True)
class Route:
    name: str
    method: str
    path: str
    success: int
    body: dict[str, Any] | None = None
    writes: bool = False
    tenant_scoped: bool = True
    admin_only: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def url(self, seeded: Seeded, trigger_id: str = "t1", invocation: str | None = None) -> str:
        return self.path.format(
            trigger=trigger_id,
            pending=invocation or seeded.pending,
            finished=invocation or seeded.finished,
            cascade=seeded.cascade,
            user="bob",
        )


TRIGGER = f"{BASE}/{{trigger}}"
# The daily 09:00 runs of the two days before START (2026-11-24 and 2026-11-25).
BACKFILL_TWO_DAYS = {"from": "2026-11-24T00:00:00Z", "to": "2026-11-26T00:00:00Z"}
ROUTES = [
    Route("create", "POST", BASE, 201, {"id": "new", **DAILY}, writes=True),
    Route("list-agent", "GET", BASE, 200),
    Route("list-project", "GET", PROJECT_BASE, 200),
    Route("project-history", "GET", PROJECT_BASE.rsplit("/scheduled-triggers", 1)[0] + "/invocations", 200),
    Route("upcoming-runs", "GET", f"{BASE}/upcoming-runs", 200),
    Route("get", "GET", TRIGGER, 200),
    Route("patch", "PATCH", TRIGGER, 200, {"name": "Renamed"}, writes=True),
    Route("delete", "DELETE", TRIGGER, 204, writes=True),
    Route("run", "POST", f"{TRIGGER}/run", 202, writes=True),
    Route("list-invocations", "GET", f"{TRIGGER}/invocations", 200),
    Route("get-invocation", "GET", f"{TRIGGER}/invocations/{{pending}}", 200),
    Route("cancel", "POST", f"{TRIGGER}/invocations/{{pending}}/cancel", 200, writes=True),
    Route("rerun", "POST", f"{TRIGGER}/invocations/{{finished}}/rerun", 202, writes=True),
    Route("backfill", "POST", f"{TRIGGER}/backfill", 202, BACKFILL_TWO_DAYS, writes=True),
    Route("schedule-preview", "POST", "/schedule-preview", 200, {"cronExpression": "0 9 * * *"}, tenant_scoped=False),
    Route("cascade-project", "DELETE", PROJECT_BASE, 202, writes=True, admin_only=True),
    Route("cascade-agent", "DELETE", BASE, 202, writes=True, admin_only=True),
    Route("cascade-user", "DELETE", "/tenants/acme/users/{user}/scheduled-triggers", 202, writes=True, admin_only=True),
    Route("get-cascade", "GET", "/tenants/acme/cascades/{cascade}", 200, admin_only=True),
]
TENANT_ROUTES = [route for route in ROUTES if route.tenant_scoped]
# Served without a token (SPEC §3): the API's description, its docs page and the console's files;
# everything else the resolver routes needs one.
PUBLIC_ROUTES = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/console"),
    ("GET", "/console/console.js"),
    ("GET", "/console/console.css"),
    ("GET", "/console/config.json"),
}


def _app_routes() -> set[tuple[str, str]]:
    """(method, path template) of every route the resolver has, taken from the app itself, in OpenAPI's form."""
    document = api_handler.app.get_openapi_schema()
    paths = document.paths or {}
    documented = {(method.upper(), path) for path, item in paths.items() for method in item.model_fields_set}
    return documented | PUBLIC_ROUTES


def _concrete(path: str) -> str:
    """A URL for a path template: every `{parameter}` filled with a valid id."""
    return re.sub(r"\{(\w+)\}", lambda match: "acme" if match.group(1) == "tenant_id" else "x1", path)


def test_the_table_above_covers_every_route_the_app_has() -> None:
    tested = {(route.method, re.sub(r"\{\w+\}", "{}", route.path)) for route in ROUTES}
    routed = {(method, re.sub(r"\{\w+\}", "{}", path)) for method, path in _app_routes() - PUBLIC_ROUTES}
    normalised = {
        (
            method,
            path.replace("/tenants/acme/projects/website/agents/reporter", "/tenants/{}/projects/{}/agents/{}")
            .replace("/tenants/acme/projects/website", "/tenants/{}/projects/{}")
            .replace("/tenants/acme/", "/tenants/{}/"),
        )
        for method, path in tested
    }
    assert normalised == routed


def test_every_route_but_the_public_ones_needs_a_token(api: ApiClient) -> None:
    """Derived from the app's route table, so a route added later cannot be silently open."""
    routes = _app_routes()
    assert len(routes) > len(PUBLIC_ROUTES)
    for method, path in sorted(routes):
        response = api.request(method, _concrete(path), {} if method in ("POST", "PATCH") else None, claims=None)
        if (method, path) in PUBLIC_ROUTES:
            assert response.status == 200, (method, path)
        else:
            assert_error(response, 401, "unauthorized")


def _expected(route: Route, role: str | None) -> tuple[int, str | None]:
    if role is None:
        return 401, "unauthorized"
    if not route.tenant_scoped:
        return route.success, None
    if role == "none" or (route.writes and role == "viewer") or (route.admin_only and role != "admin"):
        return 403, "forbidden"
    return route.success, None


def _caller(role: str | None, form: str) -> dict[str, Any] | None:
    """Claims of a caller with one role (or "none"), the roles claim as a JSON list or flattened "[a b]"."""
    if role is None:
        return None
    names = [] if role == "none" else [role]
    roles_claim: str | list[str] = names if form == "list" else f"[{' '.join(names)}]"
    return token_claims(SUBJECT_BY_ROLE.get(role, "nobody"), roles_claim)


CALLERS = [
    pytest.param(None, "flattened", id="no-token"),
    *(pytest.param(role, form, id=f"{role}-{form}") for role in ("none", *ROLES) for form in ("flattened", "list")),
]


@pytest.mark.parametrize("route", ROUTES, ids=lambda route: route.name)
@pytest.mark.parametrize(("role", "form"), CALLERS)
def test_every_route_by_role(
    api: ApiClient, stack: Stack, seeded: Seeded, route: Route, role: str | None, form: str
) -> None:
    """viewer reads; editor (here the creator) and admin also write; no token is 401 everywhere.

    `none` is a valid token whose roles claim names no role: it may only preview schedules.
    """
    before = scan(stack, stack.settings.triggers_table), scan(stack, stack.settings.invocations_table)

    response = api.request(route.method, route.url(seeded), route.body, claims=_caller(role, form))

    status, code = _expected(route, role)
    if code is None:
        assert response.status == status, response.body
    else:
        assert_error(response, status, code)
        after = scan(stack, stack.settings.triggers_table), scan(stack, stack.settings.invocations_table)
        assert after == before, "a refused request changed stored data"


@pytest.mark.parametrize("route", [route for route in TENANT_ROUTES if route.writes], ids=lambda route: route.name)
def test_a_viewer_is_refused_before_the_request_is_validated(api: ApiClient, seeded: Seeded, route: Route) -> None:
    viewer = token_claims("victor", "[viewer]")
    refused = api.request(route.method, route.url(seeded), route.body, claims=viewer)
    assert_error(refused, 403, "forbidden")
    for probe in (
        api.request(route.method, route.url(seeded), raw_body="{not json", claims=viewer),
        api.request(route.method, route.url(seeded), {"bogus": True}, claims=viewer),
        api.request(route.method, route.url(seeded, "bad.id", "bad.id"), route.body, claims=viewer),
    ):
        _same(probe, refused)


def test_roles_claim_with_several_roles_in_either_form(api: ApiClient, seeded: Seeded) -> None:
    for roles_claim in ("[viewer editor]", ["viewer", "editor"]):
        response = api.request(
            "PATCH", T1, {"description": str(roles_claim)}, claims=token_claims("alice", roles_claim)
        )
        assert response.status == 200, (roles_claim, response.body)
    unknown: list[Any] = ["[superuser]", ["root"], "", None, 7, "[]", []]
    for roles in unknown:
        token = {"sub": "alice", "tenant_id": "acme", "roles": roles}
        assert_error(api.request("GET", T1, claims=token), 403, "forbidden")


@pytest.mark.parametrize(
    "roles_claim",
    [
        pytest.param(["no admin"], id="list-item-with-a-space"),
        pytest.param(["viewer,admin"], id="list-item-with-a-comma"),
        pytest.param(["[admin]"], id="list-item-in-brackets"),
        pytest.param("[viewer] admin", id="text-after-the-brackets"),
        pytest.param("admin", id="bare-string"),
        pytest.param('["admin"]', id="json-text"),
        pytest.param("viewer,admin", id="comma-separated"),
        pytest.param("[Admin]", id="other-case"),
        pytest.param("[ admin]", id="extra-space"),
        pytest.param([["admin"]], id="nested-list"),
    ],
)
def test_a_role_is_granted_only_by_an_exact_match(api: ApiClient, seeded: Seeded, roles_claim: Any) -> None:
    """Loose matching once let `["no admin"]` or `"[viewer] admin"` act as admin (SPEC §8)."""
    caller = {"sub": "mallory", "tenant_id": "acme", "roles": roles_claim}
    assert_error(api.request("DELETE", T1, claims=caller), 403, "forbidden")
    assert api.request("GET", T1, claims=token_claims("alice", "[viewer]")).status == 200


@pytest.mark.parametrize(
    "token",
    [
        pytest.param({}, id="empty-claims"),
        pytest.param({"tenant_id": "acme", "roles": "[admin]"}, id="no-sub"),
        pytest.param({"sub": "alice", "roles": "[admin]"}, id="no-tenant"),
        pytest.param({"sub": "", "tenant_id": "acme", "roles": "[admin]"}, id="empty-sub"),
        pytest.param({"sub": "alice", "tenant_id": "", "roles": "[admin]"}, id="empty-tenant"),
    ],
)
def test_incomplete_claims_are_401(api: ApiClient, seeded: Seeded, token: dict[str, Any]) -> None:
    for route in ROUTES:
        assert_error(api.request(route.method, route.url(seeded), route.body, claims=token), 401, "unauthorized")


def test_tenant_claim_name_is_configurable(
    api: ApiClient, stack: Stack, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings: Settings = make_settings(stack.settings.state_machine_arn, TENANT_CLAIM="custom:org")
    custom = Deps(settings, clock=stack.clock, sfn_factory=lambda: stack.sfn)
    monkeypatch.setattr(api_handler, "deps", lambda: custom)

    assert api.request("GET", T1, claims={"sub": "alice", "custom:org": "acme", "roles": "[viewer]"}).status == 200
    assert_error(api.request("GET", T1, claims=token_claims("alice", "[viewer]")), 401, "unauthorized")


# --- who may change a trigger ------------------------------------------------------------------


# Callers of t2 (created by carol, an admin, to run as bob) and whether they may change or run it.
BY_WHO_MAY_CHANGE_T2 = pytest.mark.parametrize(
    ("sub", "roles", "allowed"),
    [
        pytest.param("carol", "[admin]", True, id="admin-creator"),
        pytest.param("bob", "[editor]", True, id="runas-editor"),
        pytest.param("dave", "[admin]", True, id="other-admin"),
        pytest.param("erin", "[editor]", False, id="other-editor"),
        pytest.param("bob", "[viewer]", False, id="runas-viewer"),
    ],
)


@pytest.fixture
def run_as_bob(api: ApiClient, stack: Stack) -> str:
    """t2: created by carol (an admin) to run as bob."""
    created = api.request(
        "POST", BASE, {"id": "t2", **DAILY, "runAsUserId": "bob"}, claims=token_claims("carol", "[admin]")
    )
    assert created.status == 201, created.body
    return trigger_path("t2")


@BY_WHO_MAY_CHANGE_T2
def test_only_admin_creator_or_run_as_user_may_change_a_trigger(
    api: ApiClient, stack: Stack, run_as_bob: str, sub: str, roles: str, allowed: bool
) -> None:
    caller = token_claims(sub, roles)
    patched = api.request("PATCH", run_as_bob, {"description": f"by {sub}"}, claims=caller)
    if allowed:
        assert patched.status == 200, patched.body
        assert api.request("DELETE", run_as_bob, claims=caller).status == 204
        assert raw_trigger(stack, "t2") is None
    else:
        assert_error(patched, 403, "forbidden")
        assert_error(api.request("DELETE", run_as_bob, claims=caller), 403, "forbidden")
        stored = raw_trigger(stack, "t2")
        assert stored is not None
        assert "description" not in stored


def test_a_creator_who_lost_the_editor_role_may_not_change_it(api: ApiClient, seeded: Seeded) -> None:
    assert_error(api.request("PATCH", T1, {"name": "x"}, claims=token_claims("alice", "[viewer]")), 403, "forbidden")
    assert api.request("PATCH", T1, {"name": "x"}, claims=token_claims("alice", "[editor]")).status == 200


@BY_WHO_MAY_CHANGE_T2
def test_only_who_may_change_a_trigger_may_run_it_now_rerun_or_backfill_it(
    api: ApiClient, stack: Stack, run_as_bob: str, sub: str, roles: str, allowed: bool
) -> None:
    """A run executes as the trigger's runAs user (bob): nobody else may set one off (SPEC §8)."""
    finished = seed_invocation(stack, "t2", START - timedelta(days=1), "completed")
    caller = token_claims(sub, roles)
    run = api.request("POST", f"{run_as_bob}/run", claims=caller, headers={"Idempotency-Key": f"k-{sub}"})
    rerun = api.request("POST", f"{run_as_bob}/invocations/{finished.invocation_id}/rerun", claims=caller)
    backfill = api.request("POST", f"{run_as_bob}/backfill", BACKFILL_TWO_DAYS, claims=caller)
    if allowed:
        assert (run.status, rerun.status, backfill.status) == (202, 202, 202), (run.body, rerun.body, backfill.body)
        return
    assert_error(run, 403, "forbidden")
    assert_error(rerun, 403, "forbidden")
    assert_error(backfill, 403, "forbidden")
    listed = api.request("GET", f"{run_as_bob}/invocations", claims=token_claims("carol", "[admin]"))
    assert [item["id"] for item in listed.body["data"]] == [finished.invocation_id]


@pytest.mark.parametrize(
    ("sub", "roles", "run_as", "status"),
    [
        pytest.param("alice", "[editor]", "alice", 201, id="editor-names-self"),
        pytest.param("alice", "[editor]", "bob", 403, id="editor-names-other"),
        pytest.param("carol", "[admin]", "bob", 201, id="admin-names-other"),
        pytest.param("carol", "[admin]", "system", 422, id="admin-names-system"),
        pytest.param("alice", "[editor]", "system", 422, id="editor-names-system"),
        pytest.param("carol", "[admin]", "apikey:ci-bot", 422, id="admin-names-apikey"),
        pytest.param("apikey:ci-bot", "[editor]", "apikey:ci-bot", 422, id="apikey-names-self"),
    ],
)
def test_run_as_user_rules(api: ApiClient, stack: Stack, sub: str, roles: str, run_as: str, status: int) -> None:
    caller = token_claims(sub, roles)
    created = api.request("POST", BASE, {"id": "c1", **DAILY, "runAsUserId": run_as}, claims=caller)
    if status == 201:
        assert created.status == 201, created.body
        assert created.body["runAsUserId"] == run_as
        return
    error = assert_error(created, status, "forbidden" if status == 403 else "validation_failed")
    assert "runAsUserId" in error["message"]
    assert raw_trigger(stack, "c1") is None
    # The same rule holds when a PATCH names the user.
    api.request("POST", BASE, {"id": "c2", **DAILY}, claims=caller)
    patched = api.request("PATCH", trigger_path("c2"), {"runAsUserId": run_as}, claims=caller)
    assert_error(patched, status, "forbidden" if status == 403 else "validation_failed")


# --- tenant isolation --------------------------------------------------------------------------

INTRUDER = token_claims("mallory", "[admin]", tenant="globex")
LARGE = "x" * (70 * 1024)


def _same(first: ApiResponse, second: ApiResponse) -> None:
    assert (first.status, first.body, first.headers) == (second.status, second.body, second.headers)


@pytest.mark.parametrize("route", TENANT_ROUTES, ids=lambda route: route.name)
def test_another_tenant_gets_403_and_learns_nothing(api: ApiClient, stack: Stack, seeded: Seeded, route: Route) -> None:
    before = scan(stack, stack.settings.triggers_table), scan(stack, stack.settings.invocations_table)
    existing = api.request(route.method, route.url(seeded), route.body, claims=INTRUDER)
    assert_error(existing, 403, "forbidden")

    probes = [
        api.request(
            route.method, route.url(seeded, "missing", "20261126T150000Z-missing"), route.body, claims=INTRUDER
        ),
        api.request(route.method, route.url(seeded, "bad.id", "bad.id"), route.body, claims=INTRUDER),
        api.request(route.method, route.url(seeded), route.body, query={"limit": "abc"}, claims=INTRUDER),
        api.request(route.method, route.url(seeded), raw_body="{not json", claims=INTRUDER),
        api.request(route.method, route.url(seeded), {"name": 5, "bogus": True}, claims=INTRUDER),
        api.request(route.method, route.url(seeded), raw_body=LARGE, claims=INTRUDER),
        api.request(
            route.method, route.url(seeded), route.body, headers={"content-type": "text/plain"}, claims=INTRUDER
        ),
        api.request(route.method, route.url(seeded), route.body, claims={**INTRUDER, "roles": "[viewer]"}),
    ]
    for probe in probes:
        _same(probe, existing)
    after = scan(stack, stack.settings.triggers_table), scan(stack, stack.settings.invocations_table)
    assert after == before
    assert stack.sfn.list_executions(stateMachineArn=stack.settings.state_machine_arn)["executions"] == []


def test_a_tenant_path_is_checked_before_the_project_and_agent_exist(api: ApiClient, seeded: Seeded) -> None:
    """The tenant comes from the path alone: another tenant's unknown project is still 403, not 404."""
    unknown = "/tenants/acme/projects/nowhere/agents/nobody/scheduled-triggers/t1"
    _same(api.request("GET", unknown, claims=INTRUDER), api.request("GET", T1, claims=INTRUDER))
    assert_error(api.request("GET", unknown), 404, "not_found")


def test_a_tenant_sees_only_its_own_triggers(api: ApiClient, stack: Stack, seeded: Seeded) -> None:
    globex_base = BASE.replace("acme", "globex")
    globex = token_claims("mallory", "[admin]", tenant="globex")
    assert api.request("POST", globex_base, {"id": "g1", **DAILY}, claims=globex).status == 201

    assert [item["id"] for item in api.request("GET", globex_base, claims=globex).body["data"]] == ["g1"]
    assert [item["id"] for item in api.request("GET", BASE).body["data"]] == ["t1"]
    assert_error(api.request("GET", trigger_path("g1")), 404, "not_found")
    assert_error(api.request("GET", trigger_path("g1", globex_base)), 403, "forbidden")

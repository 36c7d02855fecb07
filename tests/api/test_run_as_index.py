"""`make migrate ARGS="run-as-index"`: triggers stored before the `by_run_as` index existed get its key,
so that a cascade by user finds them; a dry run writes nothing, a second run finds nothing."""

from __future__ import annotations

import io
from typing import Any

import pytest
from sundial.services import cascades

from sundial_migrate.__main__ import migrate
from tests.api_support import raw_trigger
from tests.cascade_support import ADMIN, USER_BASE, create, drive
from tests.conftest import BASE, ApiClient, Stack

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")


def stored_before_the_index(stack: Stack, trigger_id: str) -> None:
    """What a trigger written before `run_as_key` existed looks like: the runAs user, no key."""
    stack.dynamodb.update_item(
        TableName=stack.settings.triggers_table,
        Key={"pk": {"S": f"acme#{trigger_id}"}},
        UpdateExpression="REMOVE run_as_key",
    )


def run(stack: Stack, *args: str) -> tuple[int, str]:
    out = io.StringIO()
    code = migrate(["run-as-index", *args], deps=stack.deps, out=out, err=io.StringIO())
    return code, out.getvalue()


def cascade_bob(api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    accepted = api.request("DELETE", USER_BASE, claims=ADMIN)
    drive(stack, monkeypatch, "acme", accepted.body["cascadeId"])
    progress: dict[str, Any] = api.request(
        "GET", f"/tenants/acme/cascades/{accepted.body['cascadeId']}", claims=ADMIN
    ).body
    return progress


def test_old_triggers_are_indexed_and_then_found_by_a_cascade_by_user(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    for trigger_id in ("old-1", "old-2", "new"):
        create(api, BASE, trigger_id, runAsUserId="bob")
    create(api, BASE, "nobody")
    stored_before_the_index(stack, "old-1")
    stored_before_the_index(stack, "old-2")

    assert run(stack) == (
        0,
        "2 triggers with a runAs user were missing from the by_run_as index\n"
        "dry run: nothing was written (add --apply to write)\n",
    )
    assert "run_as_key" not in (raw_trigger(stack, "old-1") or {})

    code, report = run(stack, "--apply")
    assert (code, report) == (
        0,
        "2 triggers with a runAs user were missing from the by_run_as index; "
        "indexed 2, 0 changed meanwhile (their edit indexed them)\n",
    )
    assert raw_trigger(stack, "old-1")["run_as_key"] == "acme#bob"  # type: ignore[index]
    assert run(stack, "--apply")[1].startswith("0 triggers")

    progress = cascade_bob(api, stack, monkeypatch)
    assert (progress["found"], progress["deleted"]) == (3, 3)
    assert raw_trigger(stack, "nobody") is not None


def test_without_the_index_a_cascade_by_user_misses_old_triggers(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Why the command exists: the same cascade, before it ran."""
    create(api, BASE, "old", runAsUserId="bob")
    stored_before_the_index(stack, "old")

    assert cascade_bob(api, stack, monkeypatch)["found"] == 0
    assert raw_trigger(stack, "old") is not None


def test_a_trigger_edited_between_the_scan_and_the_write_keeps_what_its_edit_wrote(
    api: ApiClient, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    create(api, BASE, "moved", runAsUserId="bob")
    create(api, BASE, "gone", runAsUserId="bob")
    stored_before_the_index(stack, "moved")
    stored_before_the_index(stack, "gone")
    scanned = list(cascades.trigger_store.without_run_as_key())

    def scan_then_edit() -> Any:
        assert api.request("PATCH", f"{BASE}/moved", {"runAsUserId": "dana"}, claims=ADMIN).status == 200
        assert api.request("DELETE", f"{BASE}/gone", claims=ADMIN).status == 204
        return iter(scanned)

    monkeypatch.setattr(cascades.trigger_store, "without_run_as_key", scan_then_edit)
    report = cascades.index_run_as_users(write=True)

    assert (report.found, report.indexed, report.changed_meanwhile) == (2, 0, 2)
    assert raw_trigger(stack, "moved")["run_as_key"] == "acme#dana"  # type: ignore[index]
    assert raw_trigger(stack, "gone") is None

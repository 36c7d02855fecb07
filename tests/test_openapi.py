"""The OpenAPI document: generated from the routes, committed as docs/openapi.json, and complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import api_handler
import pytest
from openapi_spec_validator import validate

from tests.conftest import ApiClient

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

COMMITTED = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"
AGENT = "/tenants/{tenant_id}/projects/{project_id}/agents/{agent_id}/scheduled-triggers"
TRIGGER = f"{AGENT}/{{trigger_id}}"
INVOCATION = f"{TRIGGER}/invocations/{{invocation_id}}"
# SPEC section 3, operation by operation: (method, path) → (success status, request body schema or None).
OPERATIONS: dict[tuple[str, str], tuple[str, str | None]] = {
    ("post", AGENT): ("201", "TriggerCreate"),
    ("get", AGENT): ("200", None),
    ("get", "/tenants/{tenant_id}/projects/{project_id}/scheduled-triggers"): ("200", None),
    ("get", "/tenants/{tenant_id}/projects/{project_id}/invocations"): ("200", None),
    ("get", f"{AGENT}/upcoming-runs"): ("200", None),
    ("get", TRIGGER): ("200", None),
    ("patch", TRIGGER): ("200", "TriggerPatch"),
    ("delete", TRIGGER): ("204", None),
    ("post", f"{TRIGGER}/run"): ("202", None),
    ("get", f"{TRIGGER}/invocations"): ("200", None),
    ("get", INVOCATION): ("200", None),
    ("post", f"{INVOCATION}/cancel"): ("200", None),
    ("post", f"{INVOCATION}/rerun"): ("202", None),
    ("post", "/schedule-preview"): ("200", "SchedulePreviewRequest"),
}
ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}


@pytest.fixture(scope="module")
def document() -> dict[str, Any]:
    generated: dict[str, Any] = json.loads(api_handler.openapi_json())
    return generated


def test_committed_document_is_current() -> None:
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    assert committed == api_handler.openapi_json(), "docs/openapi.json is stale: run `make openapi`"


def test_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)
    assert document["openapi"].startswith("3.1")
    assert document["info"]["title"] == "Sundial"


def test_every_operation_of_the_spec_is_documented(document: dict[str, Any]) -> None:
    documented = {(method, path) for path, item in document["paths"].items() for method in item}
    assert documented == set(OPERATIONS)
    assert "/openapi.json" not in document["paths"]


@pytest.mark.parametrize(("method", "path"), [pytest.param(*key, id=f"{key[0]} {key[1]}") for key in OPERATIONS])
def test_operation_has_schemas_and_documented_errors(document: dict[str, Any], method: str, path: str) -> None:
    operation = document["paths"][path][method]
    success, request_schema = OPERATIONS[(method, path)]
    assert operation["summary"]
    assert operation["operationId"][0].islower()
    assert "_" not in operation["operationId"]

    placeholders = {part.strip("{}") for part in path.split("/") if part.startswith("{")}
    assert {param["name"] for param in operation.get("parameters", []) if param["in"] == "path"} == placeholders

    if request_schema is None:
        assert "requestBody" not in operation
    else:
        assert operation["requestBody"]["required"] is True
        schema = operation["requestBody"]["content"]["application/json"]["schema"]
        assert schema == {"$ref": f"#/components/schemas/{request_schema}"}

    responses = operation["responses"]
    if success == "204":
        assert responses[success]["content"] == {}
    else:
        assert "$ref" in responses[success]["content"]["application/json"]["schema"]
    errors = {status for status in responses if status.startswith("4")}
    assert {"401", "403", "422"} <= errors
    if path.startswith("/tenants") and "{trigger_id}" in path:
        assert "404" in errors
    if request_schema is not None:
        assert {"400", "413", "415"} <= errors
    for status in errors:
        assert responses[status]["content"]["application/json"]["schema"] == ERROR_SCHEMA, status


def test_models_use_the_wire_names(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    assert set(schemas["TriggerCreate"]["properties"]) >= {"cronExpression", "cronTimezone", "runAt", "maxRetries"}
    assert schemas["TriggerCreate"]["additionalProperties"] is False
    assert schemas["TriggerPatch"]["additionalProperties"] is False
    assert set(schemas["Trigger"]["properties"]) >= {"nextRunAt", "scheduleDescription", "lastRunConversationIds"}
    assert "upcomingRuns" in schemas["TriggerDetail"]["properties"]
    assert set(schemas["ErrorResponse"]["properties"]) == {"error"}
    assert set(schemas["ErrorBody"]["properties"]) == {"code", "message", "details"}
    assert "HTTPValidationError" not in schemas


def test_bearer_jwt_security_applies_to_every_operation(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["jwt"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "Verified by the API Gateway JWT authorizer; claims sub, tenant and roles.",
    }
    assert document["security"] == [{"jwt": []}]


def test_served_document_is_the_committed_one() -> None:
    response = ApiClient().request("GET", "/openapi.json", claims=None)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.body == json.loads(COMMITTED.read_text(encoding="utf-8"))

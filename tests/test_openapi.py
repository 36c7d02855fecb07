"""The OpenAPI document: generated from the routes, committed as docs/openapi.json, and complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import api_handler
import pytest
from openapi_schema_validator import OAS31Validator
from openapi_schema_validator import validate as validate_instance
from openapi_spec_validator import validate
from sundial.contracts import api as contracts

from tests.conftest import BASE, ApiClient

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
    ("post", f"{TRIGGER}/backfill"): ("202", "BackfillRequest"),
    ("get", f"{TRIGGER}/invocations"): ("200", None),
    ("get", INVOCATION): ("200", None),
    ("post", f"{INVOCATION}/cancel"): ("200", None),
    ("post", f"{INVOCATION}/rerun"): ("202", None),
    ("post", "/schedule-preview"): ("200", "SchedulePreviewRequest"),
    ("delete", "/tenants/{tenant_id}/projects/{project_id}/scheduled-triggers"): ("202", None),
    ("delete", AGENT): ("202", None),
    ("delete", "/tenants/{tenant_id}/users/{user_id}/scheduled-triggers"): ("202", None),
    ("get", "/tenants/{tenant_id}/cascades/{cascade_id}"): ("200", None),
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


def _schemas(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = document["components"]["schemas"]
    return schemas


def _properties(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (name, prop, schema)
        for name, model in _schemas(document).items()
        for prop, schema in model.get("properties", {}).items()
    ]


def _conforms(document: dict[str, Any], instance: Any, schema: dict[str, Any]) -> None:
    """`instance` is valid for `schema` (formats included); its `$ref`s resolve in the document's components."""
    validate_instance(
        instance,
        {**schema, "components": document["components"]},
        cls=OAS31Validator,
        format_checker=OAS31Validator.FORMAT_CHECKER,
    )


def test_every_property_has_a_description_and_an_example(document: dict[str, Any]) -> None:
    undocumented = [
        f"{name}.{prop}"
        for name, prop, schema in _properties(document)
        if not str(schema.get("description", "")).strip() or not schema.get("examples")
    ]
    assert not undocumented
    assert len(_properties(document)) > 150


def test_descriptions_name_the_defaults(document: dict[str, Any]) -> None:
    for name, prop, schema in _properties(document):
        if "default" in schema:
            assert schema["description"].endswith(f"; default {json.dumps(schema['default'])}"), f"{name}.{prop}"


def test_every_example_is_valid_for_its_property(document: dict[str, Any]) -> None:
    for name, prop, schema in _properties(document):
        for example in schema["examples"]:
            try:
                _conforms(document, example, schema)
            except Exception as error:
                raise AssertionError(f"{name}.{prop}: {example!r}") from error


@pytest.mark.parametrize("name", sorted(json.loads(api_handler.openapi_json())["components"]["schemas"]))
def test_examples_pass_the_models_validation(document: dict[str, Any], name: str) -> None:
    """The properties' examples together make a valid object, and so does the schema's own example."""
    schema = _schemas(document)[name]
    model = getattr(contracts, name)
    assembled = {prop: each["examples"][0] for prop, each in schema["properties"].items()}
    _conforms(document, assembled, schema)
    model.model_validate(assembled)
    for example in schema.get("examples", []):
        _conforms(document, example, schema)
        model.model_validate(example)


def test_request_examples_are_accepted_by_the_api(document: dict[str, Any], api: ApiClient) -> None:
    """The request bodies' own examples, as the docs page offers them, work as they are."""
    schemas = _schemas(document)
    (create,) = schemas["TriggerCreate"]["examples"]
    (patch,) = schemas["TriggerPatch"]["examples"]
    (preview,) = schemas["SchedulePreviewRequest"]["examples"]

    created = api.request("POST", BASE, create)
    assert created.status == 201, created.body
    changed = api.request("PATCH", f"{BASE}/{created.body['id']}", patch)
    assert changed.status == 200, changed.body
    previewed = api.request("POST", "/schedule-preview", preview)
    assert previewed.status == 200, previewed.body
    assert len(previewed.body["nextRuns"]) == preview["count"]


def test_every_operation_has_a_declared_tag(document: dict[str, Any]) -> None:
    declared = {tag["name"]: tag.get("description", "") for tag in document["tags"]}
    assert all(description.strip() for description in declared.values())
    used = {tag for item in document["paths"].values() for operation in item.values() for tag in operation["tags"]}
    assert used == set(declared)
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["tags"], f"{method} {path}"


def test_served_document_is_the_committed_one() -> None:
    response = ApiClient().request("GET", "/openapi.json", claims=None)
    assert response.status == 200
    assert response.headers["Content-Type"] == "application/json"
    assert response.body == json.loads(COMMITTED.read_text(encoding="utf-8"))

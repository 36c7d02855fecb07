"""The OpenAPI side of the routes: shared parameters, documented error responses, the pruned document."""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Annotated, Any

from api_json import MAX_BODY_BYTES
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, content_types
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer, Tag
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from sundial.contracts.api import ID_PATTERN, ErrorResponse
from sundial.store.pagination import MAX_PAGE_SIZE

BASE = "/tenants/<tenant_id>/projects/<project_id>/agents/<agent_id>/scheduled-triggers"
TITLE = "Sundial"
API_VERSION = "1.0.0"
SCHEMA_REF_PREFIX = "#/components/schemas/"

IdParam = Annotated[str, Path(pattern=ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
CursorParam = Annotated[str | None, Query(min_length=1, max_length=2048)]

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed JSON, a body that is not an object, contradictory fields, or a bad cursor",
    401: "No or invalid bearer token",
    403: "Another tenant's path, or a role that may not do this",
    404: "No such trigger, invocation or cascade",
    409: "Conflicts with the resource's current state",
    413: f"Request body larger than {MAX_BODY_BYTES} bytes",
    415: "Request body that is not application/json",
    422: "Invalid fields, one entry per field in `details`",
    503: "Step Functions did not accept the run; the invocation is recorded as failed and the request may be repeated",
}
# The groups of operations, in the order the docs page lists them.
TRIGGERS, SCHEDULES, RUNS, INVOCATIONS, CASCADES = "Triggers", "Schedules", "Runs", "Invocations", "Cascades"
TAGS = (
    Tag(name=TRIGGERS, description="Create, list, read, change and delete scheduled triggers"),
    Tag(name=SCHEDULES, description="When triggers run: an agent's upcoming runs, and a preview of any schedule"),
    Tag(name=RUNS, description="Run a trigger now, re-run a finished invocation, or cancel an unfinished one"),
    Tag(name=INVOCATIONS, description="Run history: a trigger's or a project's invocations, each with its attempts"),
    Tag(name=CASCADES, description="Admin: delete every trigger of a project, branch, agent or runAs user"),
)
READ_ERRORS = (401, 403, 422)
BODY_ERRORS = (400, 401, 403, 413, 415, 422)


def configure(app: APIGatewayHttpResolver) -> None:
    app.configure_openapi(
        title=TITLE,
        version=API_VERSION,
        description=(
            "Scheduled triggers for AI agents: create, list, edit, run now, and inspect invocations. "
            'Every error is `{"error": {"code", "message", "details"}}`; timestamps are ISO-8601 UTC with `Z`.'
        ),
        security_schemes={
            "jwt": HTTPBearer(
                bearerFormat="JWT",
                description="Verified by the API Gateway JWT authorizer; claims sub, tenant and roles.",
            )
        },
        security=[{"jwt": []}],
        tags=[*TAGS],
    )


def responses(success: int, description: str, *errors: int) -> dict[int, OpenAPIResponse]:
    """OpenAPI responses: the success (schema from the return type) and each error, all `ErrorResponse`."""
    documented: dict[int, OpenAPIResponse] = {success: {"description": description}}
    if success == HTTPStatus.NO_CONTENT:
        documented[success]["content"] = {}
    for status in sorted(set(errors)):
        documented[status] = {
            "description": ERROR_DESCRIPTIONS[status],
            "content": {content_types.APPLICATION_JSON: {"model": ErrorResponse}},
        }
    return documented


def _referenced_schemas(document: dict[str, Any]) -> set[str]:
    """Names of the component schemas the paths use, directly or through other schemas."""
    schemas = document.get("components", {}).get("schemas", {})
    used: set[str] = set()
    pending: list[Any] = [document.get("paths", {})]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith(SCHEMA_REF_PREFIX):
                name = ref.removeprefix(SCHEMA_REF_PREFIX)
                if name not in used:
                    used.add(name)
                    pending.append(schemas.get(name, {}))
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return used


def document_json(app: APIGatewayHttpResolver) -> str:
    """The OpenAPI document generated from the routes, as committed in docs/openapi.json.

    Sorted keys and two-space indents keep the committed copy's diffs to real changes. The resolver
    always adds its own validation-error schemas; Sundial's errors are `ErrorResponse`, so schemas
    no path refers to are dropped.
    """
    document: dict[str, Any] = json.loads(app.get_openapi_json_schema())
    used = _referenced_schemas(document)
    schemas = document.get("components", {}).get("schemas", {})
    document["components"]["schemas"] = {name: schema for name, schema in schemas.items() if name in used}
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"

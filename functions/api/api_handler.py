"""HTTP API Lambda: parse and validate requests, call one domain function, map the result.

Every request passes one gate (`_admit`) before anything is said about it: who is calling (401),
the path's tenant and the role the method needs (403), then the body's media type (415) and size
(413). Only then are fields validated (400/422), so another tenant learns nothing, not even what is
wrong with its request. Errors are mapped to HTTP in one place (the `exception_handler`s below).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from http import HTTPStatus
from typing import Annotated, Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response, content_types
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer
from aws_lambda_powertools.event_handler.openapi.params import Body, Header, Path, Query
from aws_lambda_powertools.event_handler.openapi.types import OpenAPIResponse
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel
from sundial import invocation_api, triggers
from sundial.auth import Principal
from sundial.errors import (
    BadRequestError,
    ConflictError,
    FieldProblem,
    ForbiddenError,
    NotFoundError,
    PayloadTooLargeError,
    SundialError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
    ValidationFailedError,
)
from sundial.models import (
    ID_PATTERN,
    ErrorResponse,
    Invocation,
    InvocationPage,
    InvocationStatus,
    RunAccepted,
    SchedulePreview,
    SchedulePreviewRequest,
    Trigger,
    TriggerCreate,
    TriggerDetail,
    TriggerPage,
    TriggerPatch,
    UpcomingRuns,
)
from sundial.observability import entry_point, logger, metrics
from sundial.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from sundial.runtime import Runtime
from sundial.settings import get_settings

MAX_BODY_BYTES = 64 * 1024
MAX_INTEGER_DIGITS = 100
BASE = "/tenants/<tenant_id>/projects/<project_id>/agents/<agent_id>/scheduled-triggers"
TITLE = "Sundial"
API_VERSION = "1.0.0"


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INTEGER_DIGITS + 1:
        raise ValueError(f"integer with more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_body(text: str) -> Any:
    """`json.loads` for request bodies, refusing what would otherwise crash later or not be JSON.

    An oversized body is not parsed at all (the gate then answers 413); NaN/Infinity, numbers out
    of float range, integers of more than 100 digits and nesting deep enough to exhaust the stack
    all become ordinary "not valid JSON" errors (400) instead of 500s.
    """
    if len(text) > MAX_BODY_BYTES or len(text.encode()) > MAX_BODY_BYTES:
        raise json.JSONDecodeError(f"body is larger than {MAX_BODY_BYTES} bytes", "", 0)
    try:
        return json.loads(text, parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_refuse_constant)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise json.JSONDecodeError(reason, "", 0) from None


app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=parse_json_body)
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
)

IdParam = Annotated[str, Path(pattern=ID_PATTERN)]
Limit = Annotated[int, Query(ge=1, le=MAX_PAGE_SIZE)]
Cursor = Annotated[str | None, Query(min_length=1, max_length=2048)]

ERROR_DESCRIPTIONS: dict[int, str] = {
    400: "Malformed JSON, a body that is not an object, contradictory fields, or a bad cursor",
    401: "No or invalid bearer token",
    403: "Another tenant's path, or a role that may not do this",
    404: "No such trigger or invocation",
    409: "Conflicts with the resource's current state",
    413: f"Request body larger than {MAX_BODY_BYTES} bytes",
    415: "Request body that is not application/json",
    422: "Invalid fields, one entry per field in `details`",
}
READ_ERRORS = (401, 403, 422)
BODY_ERRORS = (400, 401, 403, 413, 415, 422)


def _responses(success: int, description: str, *errors: int) -> dict[int, OpenAPIResponse]:
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


@lru_cache(maxsize=1)
def runtime() -> Runtime:
    return Runtime(get_settings())


STATUS_BY_ERROR: dict[type[SundialError], HTTPStatus] = {
    BadRequestError: HTTPStatus.BAD_REQUEST,
    UnauthorizedError: HTTPStatus.UNAUTHORIZED,
    ForbiddenError: HTTPStatus.FORBIDDEN,
    NotFoundError: HTTPStatus.NOT_FOUND,
    ConflictError: HTTPStatus.CONFLICT,
    PayloadTooLargeError: HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
    UnsupportedMediaTypeError: HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
    ValidationFailedError: HTTPStatus.UNPROCESSABLE_ENTITY,
}


def _error_response(
    status: HTTPStatus, code: str, message: str, details: list[dict[str, Any]] | None = None
) -> Response[Any]:
    return Response(
        status_code=status,
        content_type=content_types.APPLICATION_JSON,
        body={"error": {"code": code, "message": message, "details": details or []}},
    )


def _raw_body_size() -> int:
    body = app.current_event.body or ""
    return len(body.encode()) if not app.current_event.is_base64_encoded else len(body) * 3 // 4


def principal() -> Principal:
    """The caller, from the claims API Gateway's JWT authorizer verified."""
    settings = get_settings()
    claims = app.current_event.request_context.authorizer.jwt_claim
    return Principal.from_claims(claims, settings.tenant_claim, settings.roles_claim)


def _path_tenant() -> str | None:
    """The tenant of the matched route (the resolver keeps the raw path arguments in its context)."""
    route_args: dict[str, Any] = app.context.get("_route_args") or {}
    tenant = route_args.get("tenant_id")
    return None if tenant is None else str(tenant)


def _route_takes_body() -> bool:
    route = app.context.get("_route")
    return route is not None and route.body_field is not None


def _admit() -> Principal:
    """The gate every request passes first: 401, then 403 (tenant, role by method), then 415 and 413.

    Body checks apply to routes that read a body; the others ignore whatever was sent.
    """
    caller = principal()
    tenant = _path_tenant()
    if tenant is not None:
        caller.require_tenant(tenant, "viewer" if app.current_event.http_method == "GET" else "editor")
    if _route_takes_body():
        if app.current_event.body:
            media_type = (app.current_event.headers.get("content-type") or "").split(";")[0].strip().lower()
            if media_type not in {"", content_types.APPLICATION_JSON}:
                raise UnsupportedMediaTypeError(f"Request body must be {content_types.APPLICATION_JSON}")
        if _raw_body_size() > MAX_BODY_BYTES:
            raise PayloadTooLargeError(f"Request body is larger than {MAX_BODY_BYTES} bytes")
    return caller


def _camel_case_only(model: type[BaseModel]) -> None:
    """The models also accept Python (snake_case) names for callers in code; on the wire only the API's
    camelCase names exist, so any other key is an unknown field (422), like a misspelling."""
    names = {field.alias or name for name, field in model.model_fields.items()}
    received = app.current_event.json_body
    unknown = sorted(key for key in received if key not in names) if isinstance(received, dict) else []
    if unknown:
        raise ValidationFailedError([FieldProblem(["body", key], "Extra inputs are not permitted") for key in unknown])


@app.exception_handler(SundialError)
def handle_domain_error(error: SundialError) -> Response[Any]:
    status = STATUS_BY_ERROR.get(type(error), HTTPStatus.BAD_REQUEST)
    return _error_response(status, error.code, error.message, error.details)


def _problem(error: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error as a `details` entry: `field` is where it is (`body.maxRetries`, `query.limit`)."""
    location = ".".join(str(part) for part in error.get("loc", ())) or "body"
    message = str(error.get("msg", "is invalid")).removeprefix("Value error, ")
    return {"field": location, "message": message}


def _refusal() -> Response[Any] | None:
    """The gate's answer to a request that failed before its route ran; None when the gate lets it pass."""
    try:
        _admit()
    except SundialError as refused:
        return handle_domain_error(refused)
    return None


@app.exception_handler(RequestValidationError)
def handle_validation_error(error: RequestValidationError) -> Response[Any]:
    """After the gate: 400 when the body is not a JSON object at all, else 422 naming each bad field."""
    refusal = _refusal()
    if refusal is not None:
        return refusal
    problems = list(error.errors())
    for problem in problems:
        if problem.get("type") == "json_invalid":
            reason = str((problem.get("ctx") or {}).get("error", "malformed"))
            return handle_domain_error(
                BadRequestError(f"Request body is not valid JSON: {reason}", [{"field": "body", "message": reason}])
            )
    for problem in problems:
        if tuple(problem.get("loc", ())) == ("body",):
            missing = problem.get("type") == "missing"
            message = "is required" if missing else "must be a JSON object"
            return handle_domain_error(
                BadRequestError(f"Request body {message}", [{"field": "body", "message": message}])
            )
    details = [_problem(problem) for problem in problems]
    summary = "; ".join(f"{detail['field']}: {detail['message']}" for detail in details)
    return _error_response(HTTPStatus.UNPROCESSABLE_ENTITY, "validation_failed", f"Invalid request: {summary}", details)


@app.exception_handler(RequestUnsupportedContentType)
def handle_unsupported_content_type(_error: RequestUnsupportedContentType) -> Response[Any]:
    """Reached only when the gate let the media type pass, i.e. for a declared type with an empty body."""
    return _refusal() or handle_domain_error(
        UnsupportedMediaTypeError(f"Request body must be {content_types.APPLICATION_JSON}")
    )


@app.exception_handler(UnicodeDecodeError)
def handle_undecodable_body(_error: UnicodeDecodeError) -> Response[Any]:
    """A base64-encoded body that is not UTF-8 text fails while the resolver decodes it."""
    return _refusal() or handle_domain_error(
        BadRequestError("Request body is not UTF-8 text", [{"field": "body", "message": "is not UTF-8"}])
    )


@app.not_found
def not_found(_error: Exception) -> Response[Any]:
    return _error_response(HTTPStatus.NOT_FOUND, "not_found", "No such route")


@app.exception_handler(Exception)
def handle_unexpected(_error: Exception) -> Response[Any]:
    """A bug, never a client's doing: logged with its traceback, answered in the standard shape."""
    logger.exception("unhandled error")
    return _error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal_error", "Internal error")


def _path(tenant_id: str, project_id: str, agent_id: str) -> triggers.AgentPath:
    return triggers.AgentPath(tenant_id, project_id, agent_id)


@app.post(
    BASE,
    status_code=201,
    summary="Create a trigger",
    operation_id="createTrigger",
    responses=_responses(201, "The created trigger", 409, *BODY_ERRORS),
)
def create_trigger(
    tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, body: Annotated[TriggerCreate, Body()]
) -> Response[Trigger]:
    caller = _admit()
    _camel_case_only(TriggerCreate)
    created = triggers.create_trigger(runtime(), caller, _path(tenant_id, project_id, agent_id), body)
    return Response(HTTPStatus.CREATED, content_types.APPLICATION_JSON, created)


@app.get(
    BASE,
    summary="List an agent's triggers",
    operation_id="listAgentTriggers",
    responses=_responses(200, "One page of the agent's triggers", 400, *READ_ERRORS),
)
def list_agent_triggers(
    tenant_id: IdParam,
    project_id: IdParam,
    agent_id: IdParam,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> TriggerPage:
    return triggers.list_triggers(runtime(), _admit(), tenant_id, project_id, agent_id, limit, cursor)


@app.get(
    "/tenants/<tenant_id>/projects/<project_id>/scheduled-triggers",
    summary="List a project's triggers",
    operation_id="listProjectTriggers",
    responses=_responses(200, "One page of the project's triggers, by agent then id", 400, *READ_ERRORS),
)
def list_project_triggers(
    tenant_id: IdParam, project_id: IdParam, limit: Limit = DEFAULT_PAGE_SIZE, cursor: Cursor = None
) -> TriggerPage:
    return triggers.list_triggers(runtime(), _admit(), tenant_id, project_id, None, limit, cursor)


@app.get(
    f"{BASE}/upcoming-runs",
    summary="The agent's next occurrences across its enabled triggers",
    operation_id="listUpcomingRuns",
    responses=_responses(200, "Occurrences, soonest first", *READ_ERRORS),
)
def upcoming_runs(
    tenant_id: IdParam,
    project_id: IdParam,
    agent_id: IdParam,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> UpcomingRuns:
    return triggers.agent_upcoming_runs(runtime(), _admit(), _path(tenant_id, project_id, agent_id), limit)


@app.get(
    f"{BASE}/<trigger_id>",
    summary="Get a trigger and its next five occurrences",
    operation_id="getTrigger",
    responses=_responses(200, "The trigger with upcomingRuns", 404, *READ_ERRORS),
)
def get_trigger(tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, trigger_id: IdParam) -> TriggerDetail:
    return triggers.get_trigger(runtime(), _admit(), _path(tenant_id, project_id, agent_id), trigger_id)


@app.patch(
    f"{BASE}/<trigger_id>",
    summary="Change any fields of a trigger",
    operation_id="updateTrigger",
    responses=_responses(200, "The changed trigger", 404, 409, *BODY_ERRORS),
)
def update_trigger(
    tenant_id: IdParam,
    project_id: IdParam,
    agent_id: IdParam,
    trigger_id: IdParam,
    body: Annotated[TriggerPatch, Body()],
) -> Trigger:
    caller = _admit()
    _camel_case_only(TriggerPatch)
    return triggers.update_trigger(runtime(), caller, _path(tenant_id, project_id, agent_id), trigger_id, body)


@app.delete(
    f"{BASE}/<trigger_id>",
    status_code=204,
    summary="Cancel a trigger's open invocations and delete it",
    operation_id="deleteTrigger",
    responses=_responses(204, "Deleted", 404, *READ_ERRORS),
)
def delete_trigger(tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, trigger_id: IdParam) -> Response[None]:
    triggers.delete_trigger(runtime(), _admit(), _path(tenant_id, project_id, agent_id), trigger_id)
    return Response(HTTPStatus.NO_CONTENT)


@app.post(
    f"{BASE}/<trigger_id>/run",
    status_code=202,
    summary="Run a trigger now",
    operation_id="runTrigger",
    responses=_responses(202, "The run was started", 404, *READ_ERRORS),
)
def run_now(
    tenant_id: IdParam,
    project_id: IdParam,
    agent_id: IdParam,
    trigger_id: IdParam,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=256)] = None,
) -> Response[RunAccepted]:
    accepted = invocation_api.run_now(
        runtime(), _admit(), _path(tenant_id, project_id, agent_id), trigger_id, idempotency_key
    )
    return Response(HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, accepted)


@app.get(
    f"{BASE}/<trigger_id>/invocations",
    summary="A trigger's invocations, newest first",
    operation_id="listInvocations",
    responses=_responses(200, "One page of invocations", 400, 404, *READ_ERRORS),
)
def list_invocations(
    tenant_id: IdParam,
    project_id: IdParam,
    agent_id: IdParam,
    trigger_id: IdParam,
    status: Annotated[InvocationStatus | None, Query()] = None,
    from_: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    to: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: Cursor = None,
) -> InvocationPage:
    query = invocation_api.InvocationQuery(status=status, from_=from_, to=to, limit=limit, cursor=cursor)
    return invocation_api.list_invocations(_admit(), _path(tenant_id, project_id, agent_id), trigger_id, query)


@app.get(
    f"{BASE}/<trigger_id>/invocations/<invocation_id>",
    summary="One invocation with its attempts",
    operation_id="getInvocation",
    responses=_responses(200, "The invocation", 404, *READ_ERRORS),
)
def get_invocation(
    tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, trigger_id: IdParam, invocation_id: IdParam
) -> Invocation:
    return invocation_api.get_invocation(_admit(), _path(tenant_id, project_id, agent_id), trigger_id, invocation_id)


@app.post(
    f"{BASE}/<trigger_id>/invocations/<invocation_id>/cancel",
    summary="Cancel a pending or running invocation",
    operation_id="cancelInvocation",
    responses=_responses(200, "The cancelled invocation", 404, 409, *READ_ERRORS),
)
def cancel_invocation(
    tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, trigger_id: IdParam, invocation_id: IdParam
) -> Invocation:
    return invocation_api.cancel_invocation(
        runtime(), _admit(), _path(tenant_id, project_id, agent_id), trigger_id, invocation_id
    )


@app.post(
    f"{BASE}/<trigger_id>/invocations/<invocation_id>/rerun",
    status_code=202,
    summary="Re-run a finished invocation",
    operation_id="rerunInvocation",
    responses=_responses(202, "The re-run was started", 404, 409, *READ_ERRORS),
)
def rerun_invocation(
    tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, trigger_id: IdParam, invocation_id: IdParam
) -> Response[RunAccepted]:
    accepted = invocation_api.rerun(
        runtime(), _admit(), _path(tenant_id, project_id, agent_id), trigger_id, invocation_id
    )
    return Response(HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, accepted)


@app.post(
    "/schedule-preview",
    summary="Preview a schedule's next occurrences",
    operation_id="previewSchedule",
    responses=_responses(200, "The next occurrences and the schedule in words", *BODY_ERRORS),
)
def schedule_preview(body: Annotated[SchedulePreviewRequest, Body()]) -> SchedulePreview:
    _admit()
    _camel_case_only(SchedulePreviewRequest)
    return triggers.preview_schedule(runtime(), body)


@app.get("/openapi.json", include_in_schema=False)
def openapi_document() -> Response[str]:
    return Response(HTTPStatus.OK, content_types.APPLICATION_JSON, openapi_json())


SCHEMA_REF_PREFIX = "#/components/schemas/"


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


@lru_cache(maxsize=1)
def openapi_json() -> str:
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


@entry_point(correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    response = app.resolve(event, context)
    metrics.add_metric(name=f"Responses{str(response['statusCode'])[0]}xx", unit=MetricUnit.Count, value=1)
    return response

"""Invocation routes: run now, backfill, history, one invocation, cancel and rerun."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from api_openapi import BASE, BODY_ERRORS, INVOCATIONS, READ_ERRORS, RUNS, CursorParam, IdParam, Limit, responses
from api_request import agent_path, caller, deps_of
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Header, Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from sundial.contracts.api import (
    ID_PATTERN,
    BackfillAccepted,
    BackfillRequest,
    Invocation,
    InvocationKind,
    InvocationPage,
    InvocationStatus,
    RunAccepted,
)
from sundial.services import invocations
from sundial.store.pagination import DEFAULT_PAGE_SIZE

router = APIGatewayHttpRouter()
TRIGGER = f"{BASE}/<trigger_id>"
INVOCATION = f"{TRIGGER}/invocations/<invocation_id>"


@router.post(
    f"{TRIGGER}/run",
    status_code=202,
    summary="Run a trigger now",
    operation_id="runTrigger",
    tags=[RUNS],
    responses=responses(202, "The run was started", 404, 503, *READ_ERRORS),
)
def run_now(
    tenant_id: IdParam,
    project_id: IdParam,
    agent_id: IdParam,
    trigger_id: IdParam,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=256)] = None,
) -> Response[RunAccepted]:
    path = agent_path(tenant_id, project_id, agent_id)
    accepted = invocations.run_now(deps_of(router), caller(router), path, trigger_id, idempotency_key)
    return Response(HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, accepted)


@router.post(
    f"{TRIGGER}/backfill",
    status_code=202,
    summary="Run the schedule's occurrences in a past range",
    description=(
        "Runs every occurrence T of the trigger's schedule with from <= T < to, now, as `backfill` invocations "
        "with scheduledFor T. Each occurrence runs once: posting the same range again answers the same "
        "invocations and starts none of them again. They obey the overlap policy like scheduled runs, without "
        "jitter; they do not count toward maxRuns and do not pause the trigger."
    ),
    operation_id="backfillTrigger",
    tags=[RUNS],
    responses=responses(202, "The runs were started", 404, *BODY_ERRORS),
)
def backfill(
    tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, trigger_id: IdParam, body: BackfillRequest
) -> Response[BackfillAccepted]:
    path = agent_path(tenant_id, project_id, agent_id)
    accepted = invocations.backfill(deps_of(router), caller(router), path, trigger_id, body)
    return Response(HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, accepted)


@router.get(
    "/tenants/<tenant_id>/projects/<project_id>/invocations",
    summary="A project's invocations, newest first, deleted triggers' included",
    operation_id="listProjectInvocations",
    tags=[INVOCATIONS],
    responses=responses(
        200, "One page of invocations (it may hold fewer than limit; follow nextCursor)", 400, *READ_ERRORS
    ),
)
def list_project_invocations(
    tenant_id: IdParam,
    project_id: IdParam,
    status: Annotated[InvocationStatus | None, Query()] = None,
    kind: Annotated[InvocationKind | None, Query()] = None,
    trigger_id: Annotated[str | None, Query(alias="triggerId", pattern=ID_PATTERN)] = None,
    agent_id: Annotated[str | None, Query(alias="agentId", pattern=ID_PATTERN)] = None,
    from_: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    to: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: CursorParam = None,
) -> InvocationPage:
    query = invocations.ProjectInvocationQuery(status, kind, trigger_id, agent_id, from_, to, limit, cursor)
    return invocations.list_project_invocations(caller(router), tenant_id, project_id, query)


@router.get(
    f"{TRIGGER}/invocations",
    summary="A trigger's invocations, newest first",
    operation_id="listInvocations",
    tags=[INVOCATIONS],
    responses=responses(200, "One page of invocations", 400, 404, *READ_ERRORS),
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
    cursor: CursorParam = None,
) -> InvocationPage:
    query = invocations.InvocationQuery(status=status, from_=from_, to=to, limit=limit, cursor=cursor)
    return invocations.list_invocations(caller(router), agent_path(tenant_id, project_id, agent_id), trigger_id, query)


@router.get(
    INVOCATION,
    summary="One invocation with its attempts",
    operation_id="getInvocation",
    tags=[INVOCATIONS],
    responses=responses(200, "The invocation", 404, *READ_ERRORS),
)
def get_invocation(
    tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, trigger_id: IdParam, invocation_id: IdParam
) -> Invocation:
    path = agent_path(tenant_id, project_id, agent_id)
    return invocations.get_invocation(caller(router), path, trigger_id, invocation_id)


@router.post(
    f"{INVOCATION}/cancel",
    summary="Cancel a pending or running invocation",
    operation_id="cancelInvocation",
    tags=[RUNS],
    responses=responses(200, "The cancelled invocation", 404, 409, *READ_ERRORS),
)
def cancel_invocation(
    tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, trigger_id: IdParam, invocation_id: IdParam
) -> Invocation:
    path = agent_path(tenant_id, project_id, agent_id)
    return invocations.cancel_invocation(deps_of(router), caller(router), path, trigger_id, invocation_id)


@router.post(
    f"{INVOCATION}/rerun",
    status_code=202,
    summary="Re-run a finished invocation",
    operation_id="rerunInvocation",
    tags=[RUNS],
    responses=responses(202, "The re-run was started", 404, 409, 503, *READ_ERRORS),
)
def rerun_invocation(
    tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, trigger_id: IdParam, invocation_id: IdParam
) -> Response[RunAccepted]:
    path = agent_path(tenant_id, project_id, agent_id)
    accepted = invocations.rerun(deps_of(router), caller(router), path, trigger_id, invocation_id)
    return Response(HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, accepted)

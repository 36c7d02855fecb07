"""Trigger routes: create, list, upcoming runs, get, change, delete, and the schedule preview."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from api_openapi import BASE, BODY_ERRORS, READ_ERRORS, SCHEDULES, TRIGGERS, CursorParam, IdParam, Limit, responses
from api_request import agent_path, caller, camel_case_only, deps_of
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Body, Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from sundial.contracts.api import (
    SchedulePreview,
    SchedulePreviewRequest,
    Trigger,
    TriggerCreate,
    TriggerDetail,
    TriggerPage,
    TriggerPatch,
    UpcomingRuns,
)
from sundial.services import triggers
from sundial.store.pagination import DEFAULT_PAGE_SIZE

router = APIGatewayHttpRouter()


@router.post(
    BASE,
    status_code=201,
    summary="Create a trigger",
    operation_id="createTrigger",
    tags=[TRIGGERS],
    responses=responses(201, "The created trigger", 409, *BODY_ERRORS),
)
def create_trigger(
    tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, body: Annotated[TriggerCreate, Body()]
) -> Response[Trigger]:
    camel_case_only(TriggerCreate)
    path = agent_path(tenant_id, project_id, agent_id)
    created = triggers.create_trigger(deps_of(router), caller(router), path, body)
    return Response(HTTPStatus.CREATED, content_types.APPLICATION_JSON, created)


@router.get(
    BASE,
    summary="List an agent's triggers",
    operation_id="listAgentTriggers",
    tags=[TRIGGERS],
    responses=responses(200, "One page of the agent's triggers", 400, *READ_ERRORS),
)
def list_agent_triggers(
    tenant_id: IdParam,
    project_id: IdParam,
    agent_id: IdParam,
    limit: Limit = DEFAULT_PAGE_SIZE,
    cursor: CursorParam = None,
) -> TriggerPage:
    return triggers.list_triggers(deps_of(router), caller(router), tenant_id, project_id, agent_id, limit, cursor)


@router.get(
    "/tenants/<tenant_id>/projects/<project_id>/scheduled-triggers",
    summary="List a project's triggers",
    operation_id="listProjectTriggers",
    tags=[TRIGGERS],
    responses=responses(200, "One page of the project's triggers, by agent then id", 400, *READ_ERRORS),
)
def list_project_triggers(
    tenant_id: IdParam, project_id: IdParam, limit: Limit = DEFAULT_PAGE_SIZE, cursor: CursorParam = None
) -> TriggerPage:
    return triggers.list_triggers(deps_of(router), caller(router), tenant_id, project_id, None, limit, cursor)


@router.get(
    f"{BASE}/upcoming-runs",
    summary="The agent's next occurrences across its enabled triggers",
    operation_id="listUpcomingRuns",
    tags=[SCHEDULES],
    responses=responses(200, "Occurrences, soonest first", *READ_ERRORS),
)
def upcoming_runs(
    tenant_id: IdParam,
    project_id: IdParam,
    agent_id: IdParam,
    limit: Annotated[int, Query(ge=1, le=100)] = 10,
) -> UpcomingRuns:
    path = agent_path(tenant_id, project_id, agent_id)
    return triggers.agent_upcoming_runs(deps_of(router), caller(router), path, limit)


@router.get(
    f"{BASE}/<trigger_id>",
    summary="Get a trigger and its next five occurrences",
    operation_id="getTrigger",
    tags=[TRIGGERS],
    responses=responses(200, "The trigger with upcomingRuns", 404, *READ_ERRORS),
)
def get_trigger(tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, trigger_id: IdParam) -> TriggerDetail:
    path = agent_path(tenant_id, project_id, agent_id)
    return triggers.get_trigger(deps_of(router), caller(router), path, trigger_id)


@router.patch(
    f"{BASE}/<trigger_id>",
    summary="Change any fields of a trigger",
    operation_id="updateTrigger",
    tags=[TRIGGERS],
    responses=responses(200, "The changed trigger", 404, 409, *BODY_ERRORS),
)
def update_trigger(
    tenant_id: IdParam,
    project_id: IdParam,
    agent_id: IdParam,
    trigger_id: IdParam,
    body: Annotated[TriggerPatch, Body()],
) -> Trigger:
    camel_case_only(TriggerPatch)
    path = agent_path(tenant_id, project_id, agent_id)
    return triggers.update_trigger(deps_of(router), caller(router), path, trigger_id, body)


@router.delete(
    f"{BASE}/<trigger_id>",
    status_code=204,
    summary="Cancel a trigger's open invocations and delete it",
    operation_id="deleteTrigger",
    tags=[TRIGGERS],
    responses=responses(204, "Deleted", 404, *READ_ERRORS),
)
def delete_trigger(tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, trigger_id: IdParam) -> Response[None]:
    path = agent_path(tenant_id, project_id, agent_id)
    triggers.delete_trigger(deps_of(router), caller(router), path, trigger_id)
    return Response(HTTPStatus.NO_CONTENT)


@router.post(
    "/schedule-preview",
    summary="Preview a schedule's next occurrences",
    operation_id="previewSchedule",
    tags=[SCHEDULES],
    responses=responses(200, "The next occurrences and the schedule in words", *BODY_ERRORS),
)
def schedule_preview(body: Annotated[SchedulePreviewRequest, Body()]) -> SchedulePreview:
    camel_case_only(SchedulePreviewRequest)
    return triggers.preview_schedule(deps_of(router), body)

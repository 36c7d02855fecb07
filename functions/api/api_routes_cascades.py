"""Cascade routes (SPEC §3, §7), admin only: delete every trigger of a project, a branch in it, an agent
or a runAs user (202 with the cascade's id; the work is the cascade state machine's), and its progress."""

from __future__ import annotations

from http import HTTPStatus
from typing import Annotated

from api_openapi import BASE, CASCADES, READ_ERRORS, IdParam, responses
from api_request import caller, deps_of
from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.openapi.params import Header, Path, Query
from aws_lambda_powertools.event_handler.router import APIGatewayHttpRouter
from sundial.contracts.api import Cascade, CascadeAccepted
from sundial.domain.cascade import CascadeScope
from sundial.services import cascades

router = APIGatewayHttpRouter()

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=256)]
RefQuery = Annotated[str | None, Query(min_length=1, max_length=256, pattern=r"^[^\s\x00-\x1f\x7f]+$")]
UserParam = Annotated[str, Path(min_length=1, max_length=256)]
ACCEPTED = "The cascade was accepted (or, with the same Idempotency-Key, found); follow it with getCascade"


def _accepted(scope: CascadeScope, idempotency_key: str | None) -> Response[CascadeAccepted]:
    accepted = cascades.request(deps_of(router), caller(router), scope, idempotency_key)
    return Response(HTTPStatus.ACCEPTED, content_types.APPLICATION_JSON, accepted)


@router.delete(
    "/tenants/<tenant_id>/projects/<project_id>/scheduled-triggers",
    status_code=202,
    summary="Delete every trigger of a project, or of one branch of it (?ref=)",
    description=(
        "Admin only. Cancels the triggers' unfinished invocations, stops their executions and deletes them. "
        "From acceptance on, none of them runs again, and no trigger is created in or enabled into the scope "
        "until the cascade has completed (409)."
    ),
    operation_id="cascadeProject",
    tags=[CASCADES],
    responses=responses(202, ACCEPTED, *READ_ERRORS),
)
def cascade_project(
    tenant_id: IdParam, project_id: IdParam, ref: RefQuery = None, idempotency_key: IdempotencyKey = None
) -> Response[CascadeAccepted]:
    if ref is not None:
        return _accepted(CascadeScope.branch(tenant_id, project_id, ref), idempotency_key)
    return _accepted(CascadeScope.project(tenant_id, project_id), idempotency_key)


@router.delete(
    BASE,
    status_code=202,
    summary="Delete every trigger of an agent",
    description="Admin only; as cascadeProject, for one agent of the project.",
    operation_id="cascadeAgent",
    tags=[CASCADES],
    responses=responses(202, ACCEPTED, *READ_ERRORS),
)
def cascade_agent(
    tenant_id: IdParam, project_id: IdParam, agent_id: IdParam, idempotency_key: IdempotencyKey = None
) -> Response[CascadeAccepted]:
    return _accepted(CascadeScope.agent(tenant_id, project_id, agent_id), idempotency_key)


@router.delete(
    "/tenants/<tenant_id>/users/<user_id>/scheduled-triggers",
    status_code=202,
    summary="Delete every trigger that runs as a user",
    description="Admin only; as cascadeProject, for the tenant's triggers whose runAsUserId is the user.",
    operation_id="cascadeUser",
    tags=[CASCADES],
    responses=responses(202, ACCEPTED, *READ_ERRORS),
)
def cascade_user(
    tenant_id: IdParam, user_id: UserParam, idempotency_key: IdempotencyKey = None
) -> Response[CascadeAccepted]:
    return _accepted(CascadeScope.user(tenant_id, user_id), idempotency_key)


@router.get(
    "/tenants/<tenant_id>/cascades/<cascade_id>",
    summary="A cascade's progress",
    operation_id="getCascade",
    tags=[CASCADES],
    responses=responses(200, "The cascade's scope, state and counts", 404, *READ_ERRORS),
)
def get_cascade(tenant_id: IdParam, cascade_id: IdParam) -> Cascade:
    return cascades.progress(caller(router), tenant_id, cascade_id)

"""What routes read from a request beyond their parameters: the admitted caller, the deps, the path."""

from __future__ import annotations

from aws_lambda_powertools.event_handler.api_gateway import BaseRouter
from pydantic import BaseModel
from sundial.deps import Deps
from sundial.domain.auth import Principal
from sundial.domain.errors import FieldProblem, ValidationFailedError
from sundial.services import triggers

PRINCIPAL = "principal"
DEPS = "deps"


def deps_of(router: BaseRouter) -> Deps:
    """The request's deps, put in the resolver's context by the handler."""
    found: Deps = router.context[DEPS]
    return found


def caller(router: BaseRouter) -> Principal:
    """The caller the gate admitted."""
    found: Principal = router.context[PRINCIPAL]
    return found


def agent_path(tenant_id: str, project_id: str, agent_id: str) -> triggers.AgentPath:
    return triggers.AgentPath(tenant_id, project_id, agent_id)


def camel_case_only(model: type[BaseModel]) -> None:
    """The models also accept Python (snake_case) names for callers in code; on the wire only the API's
    camelCase names exist, so any other key is an unknown field (422), like a misspelling."""
    names = {field.alias or name for name, field in model.model_fields.items()}
    received = BaseRouter.current_event.json_body
    unknown = sorted(key for key in received if key not in names) if isinstance(received, dict) else []
    if unknown:
        raise ValidationFailedError([FieldProblem(["body", key], "Extra inputs are not permitted") for key in unknown])

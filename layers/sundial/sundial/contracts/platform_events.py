"""The platform's lifecycle events that start cascades (SPEC §7; docs/events.md, "Platform events").

One definition for the handler, the samples in events/ and the docs. The EventBridge envelope's
`detail-type` names the event and `detail` carries it, versioned by `detail.schemaVersion` (1):
within a version fields are only ever added, and unknown ones are ignored; a detail of another
version is refused, so it waits in the dead-letter queue for a Sundial that reads it.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from sundial.contracts.api import Identifier, Ref, RunAsUser
from sundial.contracts.execution import StateModel
from sundial.domain.cascade import CascadeScope

SCHEMA_VERSION = 1
EventId = Annotated[str, StringConstraints(min_length=1, max_length=256)]


class PlatformEventError(Exception):
    """The event cannot start a cascade: the handler fails, and after Lambda's retries the event goes
    to the dead-letter queue with this message in its attributes."""


class _Detail(StateModel):
    schema_version: Literal[1]
    # The platform's id for the deletion; a repeat of it finds the first cascade. Without one, the
    # envelope's id, which EventBridge and Lambda keep across their own retries of one delivery.
    event_id: EventId | None = None
    tenant_id: Identifier

    @abstractmethod
    def scope(self) -> CascadeScope:
        """The triggers the event's deletion covers."""


class ProjectDeleted(_Detail):
    project_id: Identifier

    def scope(self) -> CascadeScope:
        return CascadeScope.project(self.tenant_id, self.project_id)


class AgentDeleted(_Detail):
    project_id: Identifier
    agent_id: Identifier

    def scope(self) -> CascadeScope:
        return CascadeScope.agent(self.tenant_id, self.project_id, self.agent_id)


class BranchDeleted(_Detail):
    project_id: Identifier
    ref: Ref

    def scope(self) -> CascadeScope:
        return CascadeScope.branch(self.tenant_id, self.project_id, self.ref)


class UserRemoved(_Detail):
    user_id: RunAsUser

    def scope(self) -> CascadeScope:
        return CascadeScope.user(self.tenant_id, self.user_id)


DETAILS: dict[str, type[_Detail]] = {
    "ProjectDeleted": ProjectDeleted,
    "AgentDeleted": AgentDeleted,
    "BranchDeleted": BranchDeleted,
    "UserRemoved": UserRemoved,
}
DetailType = Literal["ProjectDeleted", "AgentDeleted", "BranchDeleted", "UserRemoved"]


class PlatformEvent(BaseModel):
    """The EventBridge envelope, as the rule delivers it to the function."""

    model_config: ClassVar[ConfigDict] = ConfigDict(populate_by_name=True, extra="ignore")

    id: EventId
    detail_type: DetailType = Field(alias="detail-type")
    source: str
    detail: dict[str, Any]

    @classmethod
    def parse(cls, event: object) -> tuple[CascadeScope, str]:
        """The scope to cascade and the id a repeat of this event shares; PlatformEventError naming
        the field when the event is not one Sundial reads."""
        try:
            envelope = cls.model_validate(event)
        except ValidationError as error:
            raise PlatformEventError(_describe(error, "")) from None
        try:
            detail = DETAILS[envelope.detail_type].model_validate(envelope.detail)
        except ValidationError as error:
            raise PlatformEventError(_describe(error, "detail.")) from None
        return detail.scope(), detail.event_id or envelope.id


def _describe(error: ValidationError, prefix: str) -> str:
    """`detail.projectId: Field required`, for the first problem (and how many more there are)."""
    first = error.errors()[0]
    location = prefix + ".".join(str(part) for part in first["loc"])
    more = error.error_count() - 1
    return f"{location.rstrip('.') or 'event'}: {first['msg']}" + (f" (and {more} more)" if more else "")

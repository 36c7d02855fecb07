"""The events Sundial publishes: EventBridge `detail` shapes, versioned (docs/events.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from sundial.contracts.api import InvocationKind, InvocationStatus

RUN_EVENTS_SOURCE = "sundial"
INVOCATION_FINISHED = "Sundial Invocation Finished"


class InvocationFinished(BaseModel):
    """`detail` of "Sundial Invocation Finished": one per invocation that reached a final status.

    `schemaVersion` changes only when a field changes meaning or goes away; new fields may be added
    within a version, so consumers should ignore fields they do not know.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True)

    schema_version: Literal["1"] = "1"
    tenant_id: str
    project_id: str
    agent_id: str
    trigger_id: str
    incarnation: str
    invocation_id: str
    kind: InvocationKind
    status: InvocationStatus
    scheduled_for: str
    completed_at: str | None
    attempts: int
    error: str | None
    rerun_of: str | None

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

"""The events Sundial publishes (EventBridge `detail` shapes, versioned: docs/events.md), and the
envelope of those it receives."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from sundial.contracts.api import InvocationKind, InvocationStatus
from sundial.domain.instants import format_instant

RUN_EVENTS_SOURCE = "sundial"


class EventBridgeEvent(BaseModel):
    """The envelope of an EventBridge event a Sundial function is sent (a schedule's tick, a status change).

    Sundial's own, rather than powertools' parser models: importing those costs a third of a second of
    every cold start, for the one timestamp and detail read here.
    """

    model_config = ConfigDict(populate_by_name=True)

    id: str
    source: str
    detail_type: str = Field(alias="detail-type")
    time: datetime
    region: str
    account: str
    resources: list[str] = []
    detail: Any = None


INVOCATION_FINISHED = "Sundial Invocation Finished"


class InvocationFinished(BaseModel):
    """`detail` of "Sundial Invocation Finished": one per invocation that reached a final status.

    `schemaVersion` changes only when a field changes meaning or goes away; new fields may be added
    within a version, so consumers should ignore fields they do not know.
    """

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, from_attributes=True)

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

    @field_validator("scheduled_for", "completed_at", mode="before")
    @classmethod
    def _instant(cls, value: Any) -> Any:
        return format_instant(value) if isinstance(value, datetime) else value

    @field_validator("attempts", mode="before")
    @classmethod
    def _count(cls, value: Any) -> Any:
        """Read from a record, `attempts` is the list of them: the event carries how many."""
        return len(value) if isinstance(value, list) else value

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True)

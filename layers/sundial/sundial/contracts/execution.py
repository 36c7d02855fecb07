"""The runner state machine's input: one definition, built by every starter and parsed by the runner.

The dispatcher (scheduled occurrences), the API (run-now, rerun) and the local stack (resumed runs)
all start executions with `ExecutionInput.to_json()`; the runner's steps parse the same model.
"""

from __future__ import annotations

from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from sundial.contracts.api import InvocationKind

INSTANT_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$"


class StateModel(BaseModel):
    """camelCase JSON, as the state machine carries it; unknown keys are ignored, not rejected."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class ExecutionInput(StateModel):
    """What an execution starts with. `incarnation` ties the run to the trigger it was started for:
    a trigger deleted and re-created under the same id is another incarnation, and the run stands down.
    """

    tenant_id: str
    project_id: str
    agent_id: str
    trigger_id: str
    incarnation: str
    invocation_id: str
    kind: InvocationKind
    scheduled_for: str = Field(pattern=INSTANT_PATTERN)
    schedule_version: int | None
    idempotency_key: str
    # When the run is to start (the state machine waits until then): scheduledFor plus the trigger's
    # jitter for a scheduled occurrence, scheduledFor itself otherwise.
    starts_at: str | None = Field(None, pattern=INSTANT_PATTERN)
    # A scheduled occurrence's next one under the schedule it was claimed for (None: none, or a run
    # not claimed by the dispatcher): the missed-run rule needs it after an edit replaced that schedule.
    following: str | None = Field(None, pattern=INSTANT_PATTERN)

    @model_validator(mode="after")
    def _starts_at_scheduled_for_unless_jittered(self) -> Self:
        if self.starts_at is None:
            self.starts_at = self.scheduled_for
        return self

    def to_json(self) -> str:
        """The StartExecution input: only the input's own fields, so the same run always gives the same text."""
        return self.model_dump_json(by_alias=True, include=set(ExecutionInput.model_fields))

"""Cascades (SPEC §7): which triggers a cascade's scope covers, the scope keys its tombstone is
written under, and cascade ids derived from what started the cascade, so a repeat finds the first."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

ScopeKind = Literal["project", "agent", "ref", "user"]
SCOPE_KINDS: tuple[ScopeKind, ...] = ("project", "agent", "ref", "user")


def scope_key(tenant_id: str, kind: ScopeKind, *parts: str) -> str:
    """`acme#ref#website#main`: ids have no `#`, and a ref or user id (which may) comes last."""
    return "#".join((tenant_id, kind, *parts))


@dataclass(frozen=True)
class CascadeScope:
    """A tenant's project; an agent in it; a branch (ref) in it; or every trigger run as a user."""

    tenant_id: str
    kind: ScopeKind
    project_id: str | None = None
    agent_id: str | None = None
    ref: str | None = None
    user_id: str | None = None

    def __post_init__(self) -> None:
        needed = {
            "project": (self.project_id,),
            "agent": (self.project_id, self.agent_id),
            "ref": (self.project_id, self.ref),
            "user": (self.user_id,),
        }[self.kind]
        if any(not part for part in needed):
            raise ValueError(f"a {self.kind} scope needs {len(needed)} non-empty part(s)")

    @classmethod
    def project(cls, tenant_id: str, project_id: str) -> CascadeScope:
        return cls(tenant_id, "project", project_id=project_id)

    @classmethod
    def agent(cls, tenant_id: str, project_id: str, agent_id: str) -> CascadeScope:
        return cls(tenant_id, "agent", project_id=project_id, agent_id=agent_id)

    @classmethod
    def branch(cls, tenant_id: str, project_id: str, ref: str) -> CascadeScope:
        return cls(tenant_id, "ref", project_id=project_id, ref=ref)

    @classmethod
    def user(cls, tenant_id: str, user_id: str) -> CascadeScope:
        return cls(tenant_id, "user", user_id=user_id)

    @property
    def key(self) -> str:
        parts = {
            "project": (self.project_id,),
            "agent": (self.project_id, self.agent_id),
            "ref": (self.project_id, self.ref),
            "user": (self.user_id,),
        }[self.kind]
        return scope_key(self.tenant_id, self.kind, *(str(part) for part in parts))

    def matches(self, tenant_id: str, project_id: str, agent_id: str, ref: str, run_as_user_id: str | None) -> bool:
        """Whether a trigger with these fields is in the scope."""
        if tenant_id != self.tenant_id:
            return False
        if self.kind == "user":
            return run_as_user_id == self.user_id
        if project_id != self.project_id:
            return False
        if self.kind == "agent":
            return agent_id == self.agent_id
        if self.kind == "ref":
            return ref == self.ref
        return True

    def describe(self) -> str:
        """Words for logs and errors: `branch 'main' of project 'website'`."""
        if self.kind == "project":
            return f"project '{self.project_id}'"
        if self.kind == "agent":
            return f"agent '{self.agent_id}' of project '{self.project_id}'"
        if self.kind == "ref":
            return f"branch '{self.ref}' of project '{self.project_id}'"
        return f"user '{self.user_id}'"


def trigger_scope_keys(
    tenant_id: str, project_id: str, agent_id: str, ref: str, run_as_user_id: str | None
) -> dict[ScopeKind, str]:
    """The keys of every scope a trigger is in (three, or four with a runAs user)."""
    keys: dict[ScopeKind, str] = {
        "project": scope_key(tenant_id, "project", project_id),
        "agent": scope_key(tenant_id, "agent", project_id, agent_id),
        "ref": scope_key(tenant_id, "ref", project_id, ref),
    }
    if run_as_user_id is not None:
        keys["user"] = scope_key(tenant_id, "user", run_as_user_id)
    return keys


def entered_scope_at(
    kind: ScopeKind, created_at: datetime, ref_since: datetime | None, run_as_since: datetime | None
) -> datetime:
    """Since when a trigger has been in its scope of this kind: a trigger moved to another branch or
    runAs user later is judged by the move, so one moved onto a name cascaded long ago still runs."""
    if kind == "ref" and ref_since is not None:
        return ref_since
    if kind == "user" and run_as_since is not None:
        return run_as_since
    return created_at


def cascade_id_for(tenant_id: str, origin: str) -> str:
    """`csc_<hash>`, derived from what started the cascade (an event id, an Idempotency-Key)."""
    return "csc_" + hashlib.sha256(f"{tenant_id}\x00{origin}".encode()).hexdigest()[:24]


def event_origin(event_id: str) -> str:
    return f"event:{event_id}"


def request_origin(scope: CascadeScope, idempotency_key: str) -> str:
    """The same key on another scope is another cascade."""
    return f"request:{scope.key}:{hashlib.sha256(idempotency_key.encode()).hexdigest()}"

"""Who is calling and what they may do (SPEC §8), from the JWT claims API Gateway has verified."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from sundial.domain.errors import FieldProblem, ForbiddenError, UnauthorizedError, ValidationFailedError

Role = Literal["viewer", "editor", "admin"]
ROLE_RANK: dict[str, int] = {"viewer": 1, "editor": 2, "admin": 3}
RESERVED_RUN_AS = ("system",)
RESERVED_RUN_AS_PREFIXES = ("apikey:",)


# API Gateway's JWT authorizer flattens a claim that is an array into "[a b c]".
_FLATTENED_ROLES = re.compile(r"\[([a-z]+(?: [a-z]+)*)?\]")


def _parse_roles(raw: Any) -> frozenset[str]:
    """Roles as API Gateway delivers the claim: a JSON array, or its flattened `[viewer editor]` form.

    Matched exactly (SPEC §8): every element must be a role name as it is; any other shape
    (`"[viewer] admin"`, `["viewer,admin"]`, `["[admin]"]`) grants nothing, and unknown names are ignored.
    """
    if isinstance(raw, list):
        items = [item for item in raw if isinstance(item, str)]
    elif isinstance(raw, str) and (flattened := _FLATTENED_ROLES.fullmatch(raw)) is not None:
        items = (flattened.group(1) or "").split(" ")
    else:
        items = []
    return frozenset(item for item in items if item in ROLE_RANK)


@dataclass(frozen=True)
class Principal:
    subject: str
    tenant_id: str
    roles: frozenset[str]

    @classmethod
    def from_claims(cls, claims: Mapping[str, Any] | None, tenant_claim: str, roles_claim: str) -> Principal:
        if not claims or not claims.get("sub") or not claims.get(tenant_claim):
            raise UnauthorizedError()
        return cls(str(claims["sub"]), str(claims[tenant_claim]), _parse_roles(claims.get(roles_claim)))

    @property
    def rank(self) -> int:
        return max((ROLE_RANK[role] for role in self.roles), default=0)

    @property
    def is_admin(self) -> bool:
        return self.rank >= ROLE_RANK["admin"]

    def require_tenant(self, tenant_id: str, minimum: Role = "viewer") -> None:
        """Checked before any read: another tenant learns nothing, not even whether a resource exists."""
        if tenant_id != self.tenant_id:
            raise ForbiddenError("Token is not valid for this tenant")
        if self.rank < ROLE_RANK[minimum]:
            raise ForbiddenError(f"Requires the {minimum} role")

    def require_can_change(self, created_by: str, run_as_user_id: str | None) -> None:
        """A trigger may be changed by an admin, its creator or its runAs user."""
        if not (self.is_admin or self.subject in {created_by, run_as_user_id}):
            raise ForbiddenError("Only an admin, the trigger's creator or its runAs user may change it")

    def check_run_as(self, run_as_user_id: str | None) -> None:
        if run_as_user_id is None:
            return
        if run_as_user_id in RESERVED_RUN_AS or run_as_user_id.startswith(RESERVED_RUN_AS_PREFIXES):
            raise ValidationFailedError(
                [FieldProblem(["body", "runAsUserId"], f"'{run_as_user_id}' is reserved and cannot be used")]
            )
        if not self.is_admin and run_as_user_id != self.subject:
            raise ForbiddenError("Only an admin may set runAsUserId to another user")

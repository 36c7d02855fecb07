"""Prints an HS256 token the local stack's emulated JWT authorizer accepts.

python -m sundial_local.token --tenant acme --sub alice --roles editor
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import jwt
from sundial.domain.auth import ROLE_RANK
from sundial.settings import Settings

from sundial_local.config import LocalConfig

ALGORITHM = "HS256"
DEFAULT_TTL_SECONDS = 24 * 3600


def parse_roles(text: str) -> list[str]:
    """`editor`, `viewer,editor` or `viewer editor`; an unknown role is an error, not a silent 403 later."""
    roles = [role for role in text.replace(",", " ").split() if role]
    unknown = sorted(set(roles) - set(ROLE_RANK))
    if unknown:
        raise ValueError(f"unknown role(s) {', '.join(unknown)}; use {', '.join(ROLE_RANK)}")
    return roles


def issue_token(
    secret: str,
    *,
    tenant: str,
    sub: str,
    roles: Sequence[str],
    ttl_seconds: int = DEFAULT_TTL_SECONDS,
    now: float | None = None,
    settings: Settings | None = None,
) -> str:
    """A token with `sub`, the tenant claim, `roles` (a JSON array, as identity providers send it), `iat` and `exp`."""
    names = settings or Settings()
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": sub,
        names.tenant_claim: tenant,
        names.roles_claim: list(roles),
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(claims, secret, algorithm=ALGORITHM)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sundial_local.token",
        description="Print a token for the local stack, signed with SUNDIAL_LOCAL_JWT_SECRET (or the dev default).",
    )
    parser.add_argument("--tenant", required=True, help="tenant id (the tenant_id claim)")
    parser.add_argument("--sub", required=True, help="user id (the sub claim)")
    parser.add_argument("--roles", default="editor", help="viewer, editor and/or admin, comma separated")
    parser.add_argument(
        "--ttl", type=int, default=DEFAULT_TTL_SECONDS, help="seconds until the token expires (default: 1 day)"
    )
    args = parser.parse_args(argv)
    try:
        roles = parse_roles(args.roles)
    except ValueError as error:
        parser.error(str(error))
    config = LocalConfig()
    token = issue_token(
        config.jwt_secret.get_secret_value(), tenant=args.tenant, sub=args.sub, roles=roles, ttl_seconds=args.ttl
    )
    print(token)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Opaque cursors over DynamoDB keys, checked on the way back in so a tampered cursor is a 400."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from sundial.domain.errors import BadRequestError

MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 50


def encode_cursor(key: Mapping[str, str]) -> str:
    raw = json.dumps(dict(key), separators=(",", ":"), sort_keys=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str | None, expected: Mapping[str, str | None]) -> dict[str, str] | None:
    """Decode a cursor whose keys must be exactly `expected`'s; a non-None expected value must match.

    Pinning the partition values means a cursor can only continue the listing it came from.
    """
    if cursor is None:
        return None
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        decoded: Any = json.loads(raw)
    except (binascii.Error, ValueError, RecursionError):
        raise BadRequestError("Invalid cursor", [{"field": "cursor", "message": "not a cursor"}]) from None
    # Only the exact text this module produces is accepted: any edit, even a harmless-looking one, is a 400.
    if not isinstance(decoded, dict) or encode_cursor(decoded) != cursor:
        raise BadRequestError("Invalid cursor", [{"field": "cursor", "message": "not a cursor"}])
    valid = (
        set(decoded) == set(expected)
        and all(isinstance(value, str) and 0 < len(value) <= 512 for value in decoded.values())
        and all(want is None or decoded[name] == want for name, want in expected.items())
    )
    if not valid:
        raise BadRequestError("Invalid cursor", [{"field": "cursor", "message": "does not belong to this listing"}])
    return decoded


def last_key(item: Any, attributes: tuple[str, ...]) -> dict[str, str]:
    """The DynamoDB key of `item` as a cursor wants it (every key attribute here is a string)."""
    return {name: getattr(item, name) for name in attributes}

"""The one way Sundial writes an instant: ISO-8601 UTC at second precision with `Z`, and its compact form."""

from __future__ import annotations

from datetime import UTC, datetime

INSTANT_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
COMPACT_FORMAT = "%Y%m%dT%H%M%SZ"


def format_instant(value: datetime) -> str:
    """`2026-11-26T15:00:00Z`: what the API emits and storage keeps, lexically sortable as the due index needs."""
    if value.utcoffset() is None:
        raise ValueError("format_instant needs a timezone-aware datetime")
    return value.astimezone(UTC).strftime(INSTANT_FORMAT)


def parse_instant(value: str) -> datetime:
    return datetime.strptime(value, INSTANT_FORMAT).replace(tzinfo=UTC)


def compact_instant(value: datetime) -> str:
    """`20261126T150000Z`: sortable and safe in ids and execution names."""
    return value.astimezone(UTC).strftime(COMPACT_FORMAT)

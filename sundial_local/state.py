"""Keeps the local stack's data across restarts: every table item is written to a JSON file on shutdown
and put back on start. Executions are not saved; see `LocalStack.recover_interrupted_runs`."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

FORMAT_VERSION = 1
BATCH_SIZE = 25


class StateFileError(Exception):
    """The state file exists but cannot be used; it is left untouched for the user to inspect."""


def _items(client: DynamoDBClient, table_name: str) -> Iterator[dict[str, Any]]:
    for page in client.get_paginator("scan").paginate(TableName=table_name, ConsistentRead=True):
        yield from page.get("Items", [])


def save(client: DynamoDBClient, tables: Mapping[str, str], path: Path) -> dict[str, int]:
    """Write every item of `tables` (key → table name) to `path` atomically; returns the item count per key."""
    snapshot = {key: list(_items(client, name)) for key, name in tables.items()}
    document = {"version": FORMAT_VERSION, "savedAt": datetime.now(UTC).isoformat(), "tables": snapshot}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(document, separators=(",", ":")))
    os.replace(partial, path)
    return {key: len(items) for key, items in snapshot.items()}


def restore(client: DynamoDBClient, tables: Mapping[str, str], path: Path) -> dict[str, int]:
    """Put the items saved in `path` back into `tables`; nothing to do (empty counts) when there is no file."""
    if not path.exists():
        return {}
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise StateFileError(f"cannot read {path}: {error}") from error
    if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
        raise StateFileError(f"{path} is not a version-{FORMAT_VERSION} Sundial state file")
    saved: dict[str, list[dict[str, Any]]] = document.get("tables") or {}
    counts: dict[str, int] = {}
    for key, name in tables.items():
        items = saved.get(key, [])
        for start in range(0, len(items), BATCH_SIZE):
            requests: Any = {name: [{"PutRequest": {"Item": item}} for item in items[start : start + BATCH_SIZE]]}
            while requests:
                requests = client.batch_write_item(RequestItems=requests).get("UnprocessedItems") or None
        counts[key] = len(items)
    return counts

"""Keeps the local stack's data across restarts and crashes: the tables are written to a JSON file after
every change the stack acknowledges (and at least every second), atomically and durably, and put back
on start. Executions are not saved; see `stack.resume_unfinished_runs`."""

from __future__ import annotations

import json
import logging
import os
import threading
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


def _write_durably(path: Path, text: str) -> None:
    """Replace `path` with `text` so that a crash at any moment leaves the old file or the new one, whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    with partial.open("w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.replace(partial, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut too
    finally:
        os.close(directory)


class Persister:
    """Saves the tables whenever they changed: called after each acknowledged write, and by a ticker.

    One save at a time; a save that finds the tables as last written writes nothing.
    """

    def __init__(self, client: DynamoDBClient, tables: Mapping[str, str], path: Path) -> None:
        self._client = client
        self._tables = dict(tables)
        self._path = path
        self._lock = threading.Lock()
        self._written: str | None = None
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def save(self) -> dict[str, int] | None:
        """Write the tables if they changed since the last write; the item count per table when it wrote."""
        with self._lock:
            snapshot = {key: list(_items(self._client, name)) for key, name in self._tables.items()}
            tables = json.dumps(snapshot, separators=(",", ":"), sort_keys=True)
            if tables == self._written:
                return None
            document = {"version": FORMAT_VERSION, "savedAt": datetime.now(UTC).isoformat(), "tables": snapshot}
            _write_durably(self._path, json.dumps(document, separators=(",", ":")))
            self._written = tables
            return {key: len(items) for key, items in snapshot.items()}

    def counts(self) -> dict[str, int]:
        """The item count per table as last written."""
        written = json.loads(self._written or "{}")
        return {key: len(written.get(key, [])) for key in self._tables}

    def start_ticker(self, every_seconds: float = 1.0) -> None:
        """Also save every `every_seconds`, for any write that no hook saw."""

        def tick() -> None:
            while not self._stop.wait(every_seconds):
                try:
                    self.save()
                except Exception:  # the next tick, or the next hook, tries again
                    logging.getLogger(__name__).exception("could not save the tables to %s", self._path)

        self._ticker = threading.Thread(target=tick, name="state-saver", daemon=True)
        self._ticker.start()

    def stop_ticker(self) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=10)


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

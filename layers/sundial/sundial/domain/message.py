"""The agent's `message` (SPEC §6): `messageTemplate` with `{{a.b}}` filled from the payload and built-ins."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{\{\s*([^{}\s]+)\s*\}\}")


def _placeholder_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _lookup(payload: Any, path: str) -> Any:
    """`a.b.0.c` through nested objects (and arrays by index); None when any step is missing."""
    current = payload
    for part in path.split("."):
        if isinstance(current, Mapping) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            return None
    return current


def render_message(template: str | None, payload: dict[str, Any] | None, builtins: Mapping[str, str]) -> str:
    """`{{a.b}}` from the payload (built-ins win on a name clash); no template → the payload as JSON."""
    if template is None:
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False) if payload is not None else ""

    def replace(match: re.Match[str]) -> str:
        path = match.group(1)
        if path in builtins:
            return builtins[path]
        return _placeholder_text(_lookup(payload, path))

    return PLACEHOLDER.sub(replace, template)

"""Request-body JSON parsing that refuses, as a 400, what `json.loads` would accept and later break on."""

from __future__ import annotations

import json
import math
from typing import Any

MAX_BODY_BYTES = 64 * 1024
MAX_INTEGER_DIGITS = 100


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text[:32]} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > MAX_INTEGER_DIGITS + 1:
        raise ValueError(f"integer with more than {MAX_INTEGER_DIGITS} digits")
    return int(text)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json_body(text: str) -> Any:
    """`json.loads` for request bodies, refusing what would otherwise crash later or not be JSON.

    An oversized body is not parsed at all (the gate then answers 413); NaN/Infinity, numbers out
    of float range, integers of more than 100 digits and nesting deep enough to exhaust the stack
    all become ordinary "not valid JSON" errors (400) instead of 500s.
    """
    if len(text) > MAX_BODY_BYTES or len(text.encode()) > MAX_BODY_BYTES:
        raise json.JSONDecodeError(f"body is larger than {MAX_BODY_BYTES} bytes", "", 0)
    try:
        return json.loads(text, parse_float=_finite_float, parse_int=_bounded_int, parse_constant=_refuse_constant)
    except json.JSONDecodeError:
        raise
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise json.JSONDecodeError(reason, "", 0) from None

"""Drives a cascade as its state machine would: the Page Task's handler called until it says done, each
pause recorded (and the clock moved past it) instead of slept."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import Stack, lambda_context, token_claims

ADMIN = token_claims("carol", "[admin]")


def drive(stack: Stack, monkeypatch: pytest.MonkeyPatch, tenant_id: str, cascade_id: str) -> list[int]:
    """Run the cascade's pages to the end; returns the pauses it asked for, in seconds."""
    import cascade_handler

    monkeypatch.setattr(cascade_handler, "deps", lambda: stack.deps)
    step: dict[str, Any] = {"tenantId": tenant_id, "cascadeId": cascade_id}
    pauses: list[int] = []
    for _ in range(1000):
        step = cascade_handler.page_handler(step, lambda_context("sundial-cascade"))
        if step["done"]:
            return pauses
        if step["waitSeconds"]:
            pauses.append(step["waitSeconds"])
            stack.clock.advance(step["waitSeconds"])
    raise AssertionError("the cascade did not finish")

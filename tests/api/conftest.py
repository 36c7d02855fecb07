"""API tests share one moto session per module and reset its state between tests (it is much faster)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api_support import WarmAws
from tests.conftest import Stack


@pytest.fixture(scope="module")
def warm_aws() -> Iterator[WarmAws]:
    with WarmAws.start() as warm:
        yield warm


@pytest.fixture
def stack(warm_aws: WarmAws) -> Stack:
    return warm_aws.fresh_stack()

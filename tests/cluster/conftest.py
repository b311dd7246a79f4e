"""Cluster tests: several real overlayd processes, each in its own host namespace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from overlaynet.lab import Lab
from tests.support.lab import named_lab


@pytest.fixture
def lab(prefix: str, request: pytest.FixtureRequest) -> Iterator[Lab]:
    yield from named_lab(prefix, "k", request.node.name)

"""Cluster tests: several real overlayd processes, each in its own host namespace."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from overlaynet.lab import Lab


@pytest.fixture
def lab(prefix: str, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A lab named after the run and the test (so parallel runs and tests never collide)."""
    lab = Lab(prefix=f"{prefix}k{abs(hash(request.node.name)) % 100}")
    try:
        yield lab
    finally:
        lab.close()

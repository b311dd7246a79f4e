"""Adversarial tests: each attacks a real lab (namespaces, real overlayd processes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from overlaynet.lab import Lab


@pytest.fixture
def lab(prefix: str, request: pytest.FixtureRequest) -> Iterator[Lab]:
    """A lab named after the run and the test (so parallel runs and tests never collide)."""
    lab = Lab(prefix=f"{prefix}a{abs(hash(request.node.name)) % 100}")
    try:
        yield lab
    finally:
        lab.close()

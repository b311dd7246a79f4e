"""Adversarial tests: each attacks a real lab (namespaces, real overlayd processes)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from overlaynet.lab import Lab
from tests.support.lab import named_lab


@pytest.fixture
def lab(prefix: str, request: pytest.FixtureRequest) -> Iterator[Lab]:
    yield from named_lab(prefix, "a", request.node.name)

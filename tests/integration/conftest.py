"""Fixtures of the integration tests that live in tests/support (shared, never imported from a test module)."""

from tests.support.fastpath import make_lab  # noqa: F401 (the fast-path lab fixture)

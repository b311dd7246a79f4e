"""Under CI=true an engine that cannot start fails the engine tests; elsewhere they skip, saying why."""

from __future__ import annotations

import pytest

from tests.support.engines import engine_unavailable

pytestmark = pytest.mark.unit


def test_ci_turns_an_unavailable_engine_into_a_failure(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="dockerd cannot start.*CI=true"):
        engine_unavailable("dockerd cannot start here: boom")


@pytest.mark.parametrize("ci", [None, "false", ""])
def test_outside_ci_an_unavailable_engine_skips_with_the_reason(monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match="podman cannot run here: boom"):
        engine_unavailable("podman cannot run here: boom")

"""The agent's one kernel thread: a call that holds it up for long is named in the log."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from overlaynet.agent.config import Config
from overlaynet.agent.host import SLOW_KERNEL_CALL, Host

pytestmark = pytest.mark.unit


def test_a_slow_kernel_call_is_logged_with_its_name(caplog, tmp_path) -> None:
    host = Host(Config(name="t", state_dir=str(tmp_path)))

    async def calls() -> None:
        await host.kernel(time.sleep, SLOW_KERNEL_CALL + 0.1)
        await host.kernel(time.sleep, 0)

    try:
        with caplog.at_level(logging.WARNING, logger="overlaynet.agent"):
            asyncio.run(calls())
    finally:
        host.close()
    slow = [r.getMessage() for r in caplog.records if "event=kernel-call-slow" in r.getMessage()]
    assert len(slow) == 1 and "call=sleep" in slow[0], slow

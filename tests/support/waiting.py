"""Waiting on a condition from inside an event loop, for tests that drive asyncio code directly."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def wait_for(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)

"""An asyncio event loop in a thread of its own, so a sync test (e.g. a hypothesis one) can drive
real asyncio servers: `call(coro)` runs a coroutine there and returns its result."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def sync(self, fn: Callable[[], Any]) -> Any:
        """fn() run on the loop's thread (objects owned by the loop are touched only there)."""
        async def run() -> Any:
            return fn()
        return self.call(run())

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

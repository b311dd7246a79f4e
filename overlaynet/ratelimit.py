"""Token buckets per key (e.g. a source address), with a bounded table: pure, time passed in.

A key may spend `burst` at once and then `rate` per second. The table holds at most `max_keys`
buckets; when it is full, buckets that have refilled completely are forgotten first (forgetting a
full bucket changes nothing), then the oldest. So a flood of spoofed sources costs bounded memory.
"""

from __future__ import annotations

from collections.abc import Hashable


class TokenBuckets:
    def __init__(self, rate: float, burst: float, max_keys: int = 4096) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self.max_keys = max_keys
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)

    def allow(self, key: Hashable, now: float) -> bool:
        """Take one token for key; False when it has none left (the caller drops and counts)."""
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * self.rate)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        if len(self._buckets) >= self.max_keys:
            self._evict(now)
        self._buckets[key] = (tokens, now)  # re-inserted: the dict's order is least recently used first
        return allowed

    def _evict(self, now: float) -> None:
        full = [k for k, (tokens, at) in self._buckets.items() if tokens + (now - at) * self.rate >= self.burst]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            for key in list(self._buckets)[: max(1, self.max_keys // 8)]:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)

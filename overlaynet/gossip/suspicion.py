"""Lifeguard suspicion timer: starts at max and shrinks towards min with independent confirmations.

timeout(c) = max - (max - min) * log(c + 1) / log(k + 1), floored at min, where c counts distinct
members (other than the first accuser) that also suspect the node and k is how many we expect.
Few confirmations mean we may be the odd one out (or slow), so we wait longer before declaring death.
"""

from __future__ import annotations

import math


class Suspicion:
    def __init__(self, accuser: str, incarnation: int, start: float, k: int, lo: float, hi: float) -> None:
        self.incarnation = incarnation
        self.start = start
        self.k = k
        self.lo = lo
        self.hi = hi if k > 0 else lo
        self.confirmers = {accuser}

    def confirm(self, accuser: str) -> bool:
        """Record an independent confirmation. True if it was new and counted (so worth re-gossiping)."""
        if len(self.confirmers) - 1 >= self.k or accuser in self.confirmers:
            return False
        self.confirmers.add(accuser)
        return True

    @property
    def deadline(self) -> float:
        c = len(self.confirmers) - 1
        if self.k <= 0:
            return self.start + self.lo
        frac = math.log(c + 1) / math.log(self.k + 1)
        return self.start + max(self.lo, self.hi - (self.hi - self.lo) * frac)

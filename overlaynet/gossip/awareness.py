"""Lifeguard local health: a node that misses acks/nacks suspects itself of being slow.

The score rises when our own probes fail in a way that points at us (we did not even get the nacks
the helpers promised) or when we had to refute a suspicion of ourselves, and falls with every
successful probe. Probe interval and timeout are multiplied by (score + 1), so an overloaded host
probes less aggressively instead of wrongly accusing healthy peers.
"""

from __future__ import annotations


class Awareness:
    def __init__(self, max_multiplier: int) -> None:
        self.max = max(1, max_multiplier)
        self.score = 0

    def apply(self, delta: int) -> None:
        self.score = min(self.max - 1, max(0, self.score + delta))

    def scale(self, duration: float) -> float:
        return duration * (self.score + 1)

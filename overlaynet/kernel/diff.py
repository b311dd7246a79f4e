"""What a reconciliation changed: the return value of the sync_* verbs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class Changes:
    """Keys (MACs, IPs, VTEPs) added, replaced (value changed) and removed."""

    added: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.added or self.replaced or self.removed)


def plan(current: dict[str, str], desired: dict[str, str]) -> Changes:
    """The steps turning current into desired, sorted for stable logs."""
    return Changes(
        added=sorted(k for k in desired if k not in current),
        replaced=sorted(k for k in desired if k in current and current[k] != desired[k]),
        removed=sorted(k for k in current if k not in desired),
    )

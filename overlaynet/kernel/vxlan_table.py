"""A network's whole forwarding table on its VXLAN device, written in one netlink session: unicast FDB
entries, permanent neighbour entries and the flood list.

A program pass after a change knows what it wrote last time, so it writes only the difference and
reads nothing back: at N=32 the three dumps per pass (FDB twice, neighbours once), each parsed in
Python, were most of the per-update work. Without `previous` (the first pass, a forced resync, after
an error) the kernel's current entries are read, which also repairs drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from .fdb import FLOOD_MAC, _entries, apply_flood, apply_unicast, current_unicast, vxlan_device
from .neigh import apply_neigh, permanent_entries


@dataclass(frozen=True)
class VxlanTable:
    fdb: dict[str, str]  # MAC (lower-case) -> VTEP
    neigh: dict[str, str]  # IP -> MAC (lower-case)
    flood: frozenset[str]  # VTEPs

    @classmethod
    def of(cls, fdb: dict[str, str], neigh: dict[str, str], flood: set[str] | frozenset[str]) -> VxlanTable:
        return cls({m.lower(): v for m, v in fdb.items()}, {i: m.lower() for i, m in neigh.items()}, frozenset(flood))


def program_vxlan_table(sandbox: str, vni: int, desired: VxlanTable, previous: VxlanTable | None) -> int:
    """Make the device hold exactly `desired`; returns how many entries changed. `previous`: what this
    process last wrote there successfully (trusted, nothing is read), or None (read the kernel)."""
    with vxlan_device(sandbox, vni) as (ipr, index):
        if previous is None:
            entries = _entries(ipr, index)
            fdb, flood = current_unicast(entries), {e.vtep for e in entries if e.mac == FLOOD_MAC}
            neigh = permanent_entries(ipr, index)
        else:
            fdb, neigh, flood = dict(previous.fdb), dict(previous.neigh), set(previous.flood)
        changed = 0
        for changes in (apply_unicast(ipr, index, fdb, desired.fdb), apply_neigh(ipr, index, neigh, desired.neigh),
                        apply_flood(ipr, index, flood, set(desired.flood))):
            changed += len(changes.added) + len(changes.replaced) + len(changes.removed)
        return changed

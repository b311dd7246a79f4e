"""What one network needs programmed on this host, derived from the replicated endpoint table.

Pure: `forwarding_for` turns the cluster's endpoints into the FDB, neighbour and flood entries a
dataplane mode (kernel VXLAN or the userspace fast path) then makes real.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from overlaynet.model import EndpointRecord


@dataclass
class Forwarding:
    fdb: dict[str, str] = field(default_factory=dict)  # remote MAC -> remote VTEP
    neigh: dict[str, str] = field(default_factory=dict)  # remote IP -> MAC (ARP suppression)
    flood: set[str] = field(default_factory=set)  # VTEPs of other hosts with endpoints here


def forwarding_for(network: str, local_vtep: str, endpoints: Iterable[EndpointRecord]) -> Forwarding:
    """Entries for every endpoint of `network` that lives behind another VTEP."""
    fwd = Forwarding()
    for ep in endpoints:
        if ep.network != network:
            continue
        vtep = ep.vtep
        if not vtep or vtep == local_vtep:
            continue
        fwd.fdb[ep.mac] = vtep
        fwd.neigh[ep.ip] = ep.mac
        fwd.flood.add(vtep)
    return fwd

"""IP address management for one overlay subnet: pure rules, no I/O.

Reserved in every subnet: the network address (first) and the broadcast address (last), and the
gateway if the network has one. Everything else is handed out lowest-first, never twice.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections.abc import Iterable

from overlaynet.errors import BadRequest, Conflict


class AddressPool:
    def __init__(self, subnet: str, gateway: str | None = None) -> None:
        self.network = ipaddress.IPv4Network(subnet)
        self.gateway = ipaddress.IPv4Address(gateway) if gateway else None

    @property
    def reserved(self) -> set[ipaddress.IPv4Address]:
        out = {self.network.network_address, self.network.broadcast_address}
        if self.gateway is not None:
            out.add(self.gateway)
        return out

    def check_requested(self, ip: str, used: Iterable[str]) -> str:
        """Validate an address asked for by the user: in the subnet, not reserved, not taken."""
        try:
            addr = ipaddress.IPv4Address(ip)
        except ValueError:
            raise BadRequest(f"invalid IP address {ip!r}: expected IPv4 such as 198.19.1.10") from None
        if addr not in self.network:
            raise BadRequest(f"IP {ip} is outside the network's subnet {self.network}; pick one inside it")
        if addr in (self.network.network_address, self.network.broadcast_address):
            raise BadRequest(f"IP {ip} is the subnet's network or broadcast address, which are reserved")
        if addr == self.gateway:
            raise Conflict(f"IP {ip} is the network's gateway address; pick another")
        if str(addr) in set(used):
            raise Conflict(f"IP {ip} is already in use in this network; pick another or omit --ip")
        return str(addr)

    def first_free(self, used: Iterable[str], within: ipaddress.IPv4Network | None = None) -> str | None:
        """The lowest free address (optionally inside a block of the subnet), or None when full."""
        taken = {ipaddress.IPv4Address(u) for u in used} | self.reserved
        scope = within if within is not None else self.network
        for addr in scope:
            if addr in self.network and addr not in taken:
                return str(addr)
        return None


# ---- cluster-wide allocation: per-host address blocks ---------------------------------------
#
# Each subnet is cut into at least four blocks (a /24 into sixteen /28s). A host allocates only
# inside blocks it has claimed through the replicated "ipam" table, so concurrent attaches on
# different hosts never race for an address. Concurrent claims of one block are resolved by a
# rule every host computes the same way: the earliest claim wins, the host name breaks ties.

MIN_BLOCK_PREFIX = 28


def block_prefix(subnet: str) -> int:
    net = ipaddress.IPv4Network(subnet)
    return min(32, max(MIN_BLOCK_PREFIX, net.prefixlen + 2))


def blocks(subnet: str) -> list[str]:
    net = ipaddress.IPv4Network(subnet)
    return [str(b) for b in net.subnets(new_prefix=block_prefix(subnet))]


def block_of(subnet: str, ip: str) -> str:
    prefix = block_prefix(subnet)
    return str(ipaddress.IPv4Network(f"{ip}/{prefix}", strict=False))


def block_order(subnet: str, host: str) -> list[str]:
    """All blocks, starting at one derived from the host name: hosts claiming at the same moment
    usually try different blocks, so real conflicts are rare."""
    all_blocks = blocks(subnet)
    start = int.from_bytes(hashlib.sha256(host.encode()).digest()[:4], "big") % len(all_blocks)
    return all_blocks[start:] + all_blocks[:start]


def claim_winner(claims: Iterable[tuple[float, str]]) -> str:
    """The owner whose claim wins: earliest claim time, then the smaller host name."""
    return min(claims)[1]

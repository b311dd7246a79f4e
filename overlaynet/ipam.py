"""IP address management for one overlay subnet: pure rules, no I/O.

Reserved in every subnet: the network address (first) and the broadcast address (last), and the
gateway if the network has one. Everything else is handed out lowest-first, never twice.
"""

from __future__ import annotations

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

    def usable_count(self) -> int:
        return self.network.num_addresses - len(self.reserved)

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

    def allocate(self, used: Iterable[str], requested: str | None = None) -> str:
        used = list(used)
        if requested:
            return self.check_requested(requested, used)
        addr = self.first_free(used)
        if addr is None:
            raise Conflict(f"network subnet {self.network} is full: no free address left")
        return addr
